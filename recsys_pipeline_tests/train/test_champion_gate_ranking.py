"""The champion gate of a fold-in ranking family after the data changed: the champion is
re-scored on the challenger's validation users it never trained on (through original ids,
from its run's logged original-id model), instead of being kept as "not comparable"."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from recsys_pipeline.champion import CHAMPION
from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.tracking import TAG_DAGSTER_RUN, TAG_FAMILY, MlflowResource
from recsys_pipeline.tracking_ranking import TAG_RANKING_VALID_SHA, train_and_track_ranking
from recsys_pipeline.training.ranking_experiment import RankingOutcome
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, make_blocks

N_NEW = 6  # make_blocks' held-out users: rows N_USERS.. of every matrix here
USER_IDS = np.arange(N_USERS + N_NEW) + 1000
ITEM_IDS = np.arange(N_ITEMS) * 3 + 7


class _Log:
    def info(self, line: str) -> None:
        pass


def _write_ids(tracker: MlflowResource) -> None:
    """The lake tables ``lake_ids`` reads: user map and the fold-in matrix's columns."""
    prepared = tracker.lake.path("prepared")
    prepared.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_idx": pa.array(range(USER_IDS.size), pa.int32()),
                             "user_id": pa.array(USER_IDS, pa.int32())}),
                   prepared / "user_map.parquet")
    pq.write_table(pa.table({"column": pa.array(range(N_ITEMS), pa.int32()),
                             "item_id": pa.array(ITEM_IDS, pa.int32())}),
                   prepared / "strong_generalization_items.parquet")


def _matrices(held_out_train_rows: tuple[int, ...]) -> tuple[sp.csr_matrix, ...]:
    """(train, valid fold-in, valid held-out) over all users: the new users, plus training
    users moved to validation (their row folded in, their missing item held out)."""
    blocks = make_blocks()
    rows = list(held_out_train_rows)
    keep = np.ones(N_USERS, np.float32)
    keep[rows] = 0.0
    empty = sp.csr_matrix((N_NEW, N_ITEMS), dtype=np.float32)
    train = sp.vstack([sp.diags(keep) @ blocks.train, empty]).tocsr()
    moved = sp.diags(1.0 - keep)
    missing = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, blocks.missing[rows])),
                            shape=(N_USERS, N_ITEMS))
    fold_in = sp.vstack([moved @ blocks.train, blocks.fold_in]).tocsr()
    heldout = sp.vstack([missing, blocks.heldout]).tocsr()
    return train, fold_in, heldout


def _track(tracker: MlflowResource, model: EASEModel, fold_in: sp.csr_matrix,
           heldout: sp.csr_matrix, valid_sha: str):
    def fit(_on_epoch):
        valid = evaluate_fold_in(model, fold_in, heldout, ks=(10,))
        return RankingOutcome(model, valid, valid)

    return train_and_track_ranking(
        tracker, _Log(), name="ease_model", family="ease", fit=fit,
        model_config=model.config, train_config=None, validation=(fold_in, heldout),
        tags={TAG_DAGSTER_RUN: "r", TAG_FAMILY: "ease", TAG_RANKING_VALID_SHA: valid_sha})


def test_fold_in_champion_rescored_on_users_it_never_trained_on(tracker) -> None:
    tracker = MlflowResource(lake=tracker.lake, log_onnx=False)
    _write_ids(tracker)
    train, fold_in, heldout = _matrices(())
    champion = _track(tracker, EASEModel.fit(train, EASEConfig(l2=1.0), device="cpu"),
                      fold_in, heldout, "A")
    assert champion.champion
    # a lake without a train split: the pyfunc keeps the stored rows, and the run says so
    tags = tracker.client().get_run(champion.run_id).data.tags
    assert tags["export.pyfunc_rows"].startswith("the model's stored rows only")

    # new data: two of the champion's training users are validation users now, and the
    # challenger learned from noise (its rankings are poor)
    train2, fold_in2, heldout2 = _matrices((0, 30))
    rng = np.random.default_rng(0)
    noise = sp.random(train2.shape[0], N_ITEMS, density=0.3, random_state=rng,
                      dtype=np.float32, data_rvs=np.ones).tocsr()
    worse = _track(tracker, EASEModel.fit(noise, EASEConfig(l2=1.0), device="cpu"),
                   fold_in2, heldout2, "B")
    gate = worse.gate
    assert gate.compared_rows == N_NEW  # the two users the champion trained on left out
    assert gate.reason.startswith(f"on the {N_NEW} of {N_NEW + 2} validation rows")
    blocks = make_blocks()
    assert gate.champion_value == pytest.approx(evaluate_fold_in(
        champion.outcome.model, blocks.fold_in, blocks.heldout, ks=(10,))["ndcg@10"])
    assert gate.challenger_value == pytest.approx(evaluate_fold_in(
        worse.outcome.model, fold_in2[N_USERS:], heldout2[N_USERS:], ks=(10,))["ndcg@10"])
    assert gate.challenger_value < gate.champion_value and not worse.champion
    alias = tracker.client().get_model_version_by_alias("recsys-ease", CHAMPION)
    assert str(alias.version) == champion.registered_version

    # a challenger as good as the champion ties on the same users: kept (strictly better wins)
    tie = _track(tracker, EASEModel.fit(train2, EASEConfig(l2=1.0), device="cpu"), fold_in2,
                 heldout2, "C")
    assert tie.gate.compared_rows == N_NEW and not tie.champion
    assert tie.gate.challenger_value == pytest.approx(tie.gate.champion_value)
