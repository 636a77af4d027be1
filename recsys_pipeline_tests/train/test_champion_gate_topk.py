"""The champion gate of the two-tower family after the data changed: the champion (from its
run's original-id model) is re-scored on the challenger's validation ratings of the users
and movies both know, under temporal splits only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.champion import CHAMPION
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.tracking import TAG_DAGSTER_RUN, TAG_FAMILY, MlflowResource
from recsys_pipeline.tracking_ranking import TAG_RANKING_VALID_SHA, train_and_track_ranking
from recsys_pipeline.tracking_rescore import TopKValidation
from recsys_pipeline.training.ranking_experiment import RankingOutcome

N_USERS, N_ITEMS = 10, 12
USER_IDS = np.arange(N_USERS) * 3 + 1
ITEM_IDS = np.arange(N_ITEMS) * 10 + 5
TARGET = (np.arange(N_USERS) * 5) % N_ITEMS  # each user's validation movie


class _Log:
    def info(self, line: str) -> None:
        pass


def _write_maps(tracker: MlflowResource, n_users: int, n_items: int) -> None:
    """The id tables ``lake_ids`` reads for a two-tower model."""
    prepared = tracker.lake.path("prepared")
    prepared.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_idx": pa.array(range(n_users), pa.int32()),
                             "user_id": pa.array(USER_IDS[:n_users], pa.int32())}),
                   prepared / "user_map.parquet")
    pq.write_table(pa.table({"item_idx": pa.array(range(n_items), pa.int32()),
                             "item_id": pa.array(ITEM_IDS[:n_items], pa.int32())}),
                   prepared / "item_map.parquet")


def _planted(n_users: int, n_items: int) -> TwoTowerModel:
    """User u's vector points at its validation movie: it ranks first among unseen ones."""
    model = TwoTowerModel(n_users, n_items, TwoTowerConfig(dim=N_ITEMS))
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.eye(N_ITEMS)[:n_items])
        user = torch.full((n_users, N_ITEMS), 0.01)
        user[torch.arange(n_users), torch.as_tensor(TARGET[:n_users])] = 1.0
        model.user_embedding.weight.copy_(user)
    return model


def _validation(n_users: int, n_items: int, method: str = "user_temporal") -> TopKValidation:
    users = np.arange(n_users)
    keep = TARGET[users] < n_items
    valid = sp.csr_matrix((np.full(keep.sum(), 5.0), (users[keep], TARGET[users][keep])),
                          shape=(n_users, n_items))
    seen = (TARGET[users] + 1) % n_items  # one training movie each, masked from the ranking
    train = sp.csr_matrix((np.full(n_users, 4.0), (users, seen)), shape=(n_users, n_items))
    return TopKValidation(train, valid, method)


def _track(tracker: MlflowResource, model: TwoTowerModel, validation: TopKValidation,
           valid_sha: str):
    def fit(_on_epoch):
        return RankingOutcome(model, {"ndcg@10": 0.5}, {"ndcg@10": 0.5})

    return train_and_track_ranking(
        tracker, _Log(), name="two_tower_model", family="two_tower", fit=fit,
        model_config=model.config, train_config=None, validation=validation,
        tags={TAG_DAGSTER_RUN: "r", TAG_FAMILY: "two_tower", TAG_RANKING_VALID_SHA: valid_sha})


def test_two_tower_champion_rescored_on_users_and_items_both_know(tracker) -> None:
    tracker = MlflowResource(lake=tracker.lake, log_onnx=False)
    _write_maps(tracker, N_USERS - 1, N_ITEMS - 1)  # before user 28 and movie 115 arrived
    champion = _track(tracker, _planted(N_USERS - 1, N_ITEMS - 1),
                      _validation(N_USERS - 1, N_ITEMS - 1), "A")
    assert champion.champion

    _write_maps(tracker, N_USERS, N_ITEMS)
    valid = _validation(N_USERS, N_ITEMS)
    # compared: the champion's users whose validation movie it knows (user 9 is new;
    # TARGET = 0 5 10 3 8 1 6 11 4 9: user 7's movie 11 is new)
    compared = N_USERS - 2
    noise = TwoTowerModel(N_USERS, N_ITEMS, TwoTowerConfig(dim=N_ITEMS, seed=3))
    worse = _track(tracker, noise, valid, "B")
    gate = worse.gate
    assert gate.compared_rows == compared
    assert gate.reason.startswith(f"on the {compared} of {N_USERS} validation rows")
    assert gate.champion_value == pytest.approx(1.0)
    assert gate.challenger_value < 0.9 and not worse.champion
    alias = tracker.client().get_model_version_by_alias("recsys-two_tower", CHAMPION)
    assert str(alias.version) == champion.registered_version

    tie = _track(tracker, _planted(N_USERS, N_ITEMS), valid, "C")
    assert tie.gate.compared_rows == compared and not tie.champion
    assert tie.gate.challenger_value == pytest.approx(tie.gate.champion_value)

    rand = _track(tracker, _planted(N_USERS, N_ITEMS), _validation(N_USERS, N_ITEMS, "random"),
                  "D")
    assert not rand.champion and rand.gate.champion_value is None
    assert "re-scoring the champion failed" in rand.gate.reason
    assert "'random'" in rand.gate.reason
