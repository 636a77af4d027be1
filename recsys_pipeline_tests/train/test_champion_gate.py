"""The champion gate: margin, re-scoring on changed data, another release, and its evidence."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_pipeline.champion import CHAMPION, TAG_RELEASE, TAG_SPLIT, split_signature
from recsys_pipeline.evaluation.rating import predict, rmse
from recsys_pipeline.evaluation.topk import evaluate_topk
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.popularity import PopularityConfig
from recsys_pipeline.tracking import (
    TAG_DAGSTER_RUN,
    TAG_FAMILY,
    TAG_TRAIN_SHA,
    TAG_VALID_SHA,
    MlflowResource,
    train_and_track,
)
from recsys_pipeline.training.experiment import ExperimentData
from recsys_pipeline.training.loop import TrainConfig

GOOD = TrainConfig(epochs=6, batch_size=64, lr=0.03, device="cpu")
BAD = TrainConfig(epochs=1, batch_size=64, lr=1e-4, device="cpu")


class _Log:
    def info(self, line: str) -> None:
        pass


def _maps(data: ExperimentData, user_offset: int = 1000, shifted_users: int = 0
          ) -> dict[str, pa.Table]:
    users = np.arange(data.n_users) + user_offset
    users[:shifted_users] += 100_000  # ids the other model never saw
    return {"user_map": pa.table({"user_idx": pa.array(range(data.n_users), pa.int32()),
                                  "user_id": pa.array(users, pa.int32())}),
            "item_map": pa.table({"item_idx": pa.array(range(data.n_items), pa.int32()),
                                  "item_id": pa.array(np.arange(data.n_items) + 5000, pa.int32()),
                                  "title": pa.array([None] * data.n_items, pa.string())})}


def _train(tracker: MlflowResource, data: ExperimentData, loop: TrainConfig, valid_sha: str,
           release: str = "ml-latest-small", maps: dict | None = None):
    tags = {TAG_DAGSTER_RUN: "r", TAG_FAMILY: "mf", TAG_TRAIN_SHA: "t" * 64,
            TAG_VALID_SHA: valid_sha, TAG_RELEASE: release}
    return train_and_track(tracker, _Log(), name="mf_model", data=data,
                           model_config=MFConfig(n_factors=4, l2=0.01, seed=3),
                           train_config=loop, tags=tags, id_maps=maps or _maps(data))


def _champion_version(tracker: MlflowResource) -> str:
    return str(tracker.client().get_model_version_by_alias("recsys-mf", CHAMPION).version)


def test_margin_keeps_a_champion_that_is_only_slightly_worse(tracker, planted_data) -> None:
    first = _train(tracker, planted_data, BAD, "A")
    better = _train(tracker, planted_data, GOOD, "A")
    assert first.champion and better.champion  # margin 0: strictly better wins
    gap = first.gate.challenger_value - better.gate.challenger_value
    assert gap > 0
    demanding = MlflowResource(lake=tracker.lake, champion_margin=gap * 2)
    again = _train(demanding, planted_data, GOOD, "A")  # equal to the champion: needs > 2*gap
    assert not again.champion and f"by more than {gap * 2:g}" in again.champion_reason
    assert _champion_version(tracker) == better.registered_version
    tags = tracker.client().get_run(again.run_id).data.tags
    assert tags["champion.decision"] == "kept" and float(tags["champion.margin"]) == gap * 2
    assert float(tags["champion.champion_value"]) == pytest.approx(better.result.valid["rmse"])
    assert float(tags["champion.challenger_value"]) == pytest.approx(again.result.valid["rmse"])
    assert tags["champion.champion_valid_sha256"] == "A"
    assert tags["champion.champion_version"] == better.registered_version


def test_on_changed_data_the_champion_is_rescored_on_the_rows_it_knows(tracker, planted_data):
    champion = _train(tracker, planted_data, GOOD, "A")
    # new validation data: 12 users the champion never saw, a worse challenger
    maps = _maps(planted_data, shifted_users=12)
    worse = _train(tracker, planted_data, BAD, "B", maps=maps)
    gate = worse.gate
    known = ~np.isin(planted_data.valid.users.numpy(), np.arange(12))
    assert gate.compared_rows == int(known.sum()) < len(planted_data.valid)
    assert not worse.champion and gate.reason.startswith(
        f"on the {gate.compared_rows} of {len(planted_data.valid)} validation rows")
    assert gate.champion_value < gate.challenger_value
    # the champion's value is its RMSE on exactly those rows
    rows = planted_data.valid.subset(torch.from_numpy(np.flatnonzero(known)))
    expected = rmse(predict(champion.result.model.cpu(), rows), rows.ratings)
    assert gate.champion_value == pytest.approx(expected, rel=1e-5)
    assert _champion_version(tracker) == champion.registered_version

    better = _train(tracker, planted_data, GOOD, "C", maps=maps)
    assert better.champion is (better.gate.challenger_value < better.gate.champion_value)


def test_a_model_of_another_release_takes_over(tracker, planted_data) -> None:
    _train(tracker, planted_data, GOOD, "A")
    other = _train(tracker, planted_data, BAD, "B", release="ml-1m")
    assert other.champion and "trained on ml-latest-small, the challenger on ml-1m" in \
        other.champion_reason
    assert _champion_version(tracker) == other.registered_version


def test_a_model_of_another_split_config_takes_over_unrescored(tracker, planted_data) -> None:
    """After ratios or leave_last_k change, the new validation rows may be rows the champion
    trained on, so re-scoring it there would flatter it: the current split's model wins."""
    first = {"data.split.method": "user_temporal", "data.split.ratios": [0.8, 0.1, 0.1]}
    tags = {TAG_DAGSTER_RUN: "r", TAG_FAMILY: "mf", TAG_TRAIN_SHA: "t" * 64,
            TAG_RELEASE: "ml-latest-small"}

    def train(loop: TrainConfig, valid_sha: str, params: dict):
        return train_and_track(tracker, _Log(), name="mf_model", data=planted_data,
                               model_config=MFConfig(n_factors=4, l2=0.01, seed=3),
                               train_config=loop, tags={**tags, TAG_VALID_SHA: valid_sha},
                               id_maps=_maps(planted_data), params=params)

    champion = train(GOOD, "A", first)
    assert champion.champion
    version = tracker.client().get_model_version("recsys-mf", champion.registered_version)
    assert version.tags[TAG_SPLIT] == split_signature(first)
    same_split = train(BAD, "B", first)  # same split config, other data: re-scored
    assert not same_split.champion and same_split.gate.compared_rows > 0
    other = {**first, "data.split.ratios": [0.7, 0.15, 0.15]}
    worse = train(BAD, "C", other)
    assert worse.champion and worse.gate.compared_rows is None
    assert "trained on another split" in worse.champion_reason and "0.7" in \
        worse.champion_reason
    assert _champion_version(tracker) == worse.registered_version
    # another filter (README's prepare.yaml: top_n_items 200) moves every user's temporal
    # cut, so the champion's training rows become validation rows: not re-scored either
    filtered = train(BAD, "D", {**other, "data.filter.top_n_items": 200})
    assert filtered.champion and filtered.gate.compared_rows is None
    assert "top_n_items" in filtered.champion_reason
    assert _champion_version(tracker) == filtered.registered_version


def test_split_signature_is_canonical() -> None:
    assert split_signature(None) == split_signature({"model.lr": 1}) == ""
    a = split_signature({"data.split.method": "random", "data.split.seed": 0, "x": 1})
    assert a == split_signature({"data.split.seed": "0", "data.split.method": "random"})
    assert a != split_signature({"data.split.method": "random", "data.split.seed": 1})
    b = split_signature({"data.split.method": "random", "data.split.seed": 0,
                         "data.filter.min_user_ratings": 5})
    assert b != a and "data.filter.min_user_ratings" in b
    assert split_signature({"data.filter.min_user_ratings": 5}) == ""  # no split: unknown


def test_bad_gate_settings_are_refused(tracker) -> None:
    with pytest.raises(ValueError, match="champion_when_incomparable='maybe'"):
        MlflowResource(lake=tracker.lake, champion_when_incomparable="maybe").gate_policy()
    with pytest.raises(ValueError, match="champion_margin=-1"):
        MlflowResource(lake=tracker.lake, champion_margin=-1.0).gate_policy()


def _train_popularity(tracker: MlflowResource, data: ExperimentData, valid_sha: str,
                      maps: dict, split: str = "user_temporal"):
    tags = {TAG_DAGSTER_RUN: "r", TAG_FAMILY: "popularity", TAG_TRAIN_SHA: "t" * 64,
            TAG_VALID_SHA: valid_sha, TAG_RELEASE: "ml-latest-small"}
    return train_and_track(tracker, _Log(), name="popularity_model", data=data,
                           model_config=PopularityConfig(), train_config=BAD, tags=tags,
                           id_maps=maps, params={"data.split.method": split})


def test_a_ranker_champion_is_rescored_by_top_k_on_users_it_knows(tracker, planted_data):
    """Popularity (selected by NDCG@10): after a data change the champion and the
    challenger are ranked for the users both know, train items masked (temporal splits)."""
    tracker = MlflowResource(lake=tracker.lake, log_onnx=False)
    champion = _train_popularity(tracker, planted_data, "A", _maps(planted_data))
    assert champion.champion
    # new validation data: 12 users the champion never saw; the challenger counts the same
    # training ratings, so on the users both know it ties
    maps = _maps(planted_data, shifted_users=12)
    tie = _train_popularity(tracker, planted_data, "B", maps)
    gate = tie.gate
    valid = planted_data.valid
    known = valid.subset(torch.from_numpy(np.flatnonzero(valid.users.numpy() >= 12)))
    expected = evaluate_topk(champion.result.model.cpu(), known, planted_data.train, (10,))
    whole = evaluate_topk(champion.result.model.cpu(), valid, planted_data.train, (10,))
    assert gate.compared_rows == expected["n_users"] < whole["n_users"]
    assert gate.reason.startswith(f"on the {gate.compared_rows} of {int(whole['n_users'])} "
                                  "validation rows")
    assert gate.champion_value == pytest.approx(expected["ndcg@10"])
    assert gate.challenger_value == pytest.approx(gate.champion_value) and not tie.champion

    # another split config: not re-scored, the current split's model takes over
    rand = _train_popularity(tracker, planted_data, "C", maps, split="random")
    assert rand.champion and "trained on another split" in rand.gate.reason
    # on a random split a changed validation set cannot be re-scored (no time order to
    # know which rows the champion trained on): the incomparable policy keeps the champion
    again = _train_popularity(tracker, planted_data, "D", maps, split="random")
    assert not again.champion and again.gate.champion_value is None
    assert "'random'" in again.gate.reason
