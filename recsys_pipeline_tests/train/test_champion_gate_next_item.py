"""The champion gate of a next-item family after the data changed: the champion (its
weights and token ids from its run) is re-scored on the challenger's validation sequences
over the items both know, instead of being kept as "not comparable" — under temporal
splits only."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_pipeline.champion import CHAMPION
from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel
from recsys_pipeline.tracking import TAG_DAGSTER_RUN, TAG_FAMILY, MlflowResource
from recsys_pipeline.tracking_ranking import TAG_RANKING_VALID_SHA, train_and_track_ranking
from recsys_pipeline.tracking_rescore import NextItemValidation
from recsys_pipeline.training.ranking_experiment import RankingOutcome

N = 30  # items in the cycle; original ids 101..130 in cycle order
ITEM_IDS = np.arange(N) + 101


class _Log:
    def info(self, line: str) -> None:
        pass


def _validation(vocab_ids: np.ndarray, split_method: str = "user_temporal"
                ) -> NextItemValidation:
    """Row u: five cycle items from offset u, target the sixth (rows whose items the
    vocabulary lacks lose them; a missing target drops the row)."""
    window = ITEM_IDS[(np.arange(N)[:, None] + np.arange(6)) % N]
    token = {int(v): t + 1 for t, v in enumerate(vocab_ids)}
    tokens = np.vectorize(lambda i: token.get(int(i), 0))(window)
    keep = tokens[:, 5] > 0
    inputs = tokens[keep, :5]
    inputs = np.take_along_axis(inputs, np.argsort(inputs != 0, 1, kind="stable"), 1)
    return NextItemValidation(inputs, tokens[keep, 5], vocab_ids, split_method)


def _model(vocab_ids: np.ndarray, order: np.ndarray) -> CooccurrenceModel:
    """Co-occurrence of three laps of ``order`` (original ids) in ``vocab_ids``' tokens."""
    token = {int(v): t + 1 for t, v in enumerate(vocab_ids)}
    laps = np.array([[token[int(i)] for i in np.tile(order, 3) if int(i) in token]])
    return CooccurrenceModel.fit(laps, len(vocab_ids), CooccurrenceConfig())


def _track(tracker: MlflowResource, model: CooccurrenceModel, validation: NextItemValidation,
           valid_sha: str):
    def fit(_on_epoch):
        valid = evaluate_next_item(model, validation.tokens, validation.targets, (10,))
        return RankingOutcome(model, valid, valid)

    return train_and_track_ranking(
        tracker, _Log(), name="cooccurrence_model", family="cooccurrence", fit=fit,
        model_config=model.config, train_config=None, validation=validation,
        tags={TAG_DAGSTER_RUN: "r", TAG_FAMILY: "cooccurrence",
              TAG_RANKING_VALID_SHA: valid_sha})


def test_next_item_champion_rescored_on_shared_items(tracker) -> None:
    tracker = MlflowResource(lake=tracker.lake, log_onnx=False)
    old_ids = ITEM_IDS[:-1]  # the champion's data had no item 130 yet
    champion = _track(tracker, _model(old_ids, ITEM_IDS), _validation(old_ids), "A")
    assert champion.champion

    # new data: item 130 arrived, and the challenger learned a shuffled order (poor rankings)
    shuffled = np.random.default_rng(0).permutation(ITEM_IDS)
    valid = _validation(ITEM_IDS)
    worse = _track(tracker, _model(ITEM_IDS, shuffled), valid, "B")
    gate = worse.gate
    # the row with target 130 is not compared; the one whose input ends in 130 is, without it
    assert gate.compared_rows == N - 1
    assert gate.reason.startswith(f"on the {N - 1} of {N} validation rows")
    assert gate.champion_value == pytest.approx(1.0)  # 129 -> 101 learned without 130 between
    assert gate.challenger_value < 0.5 and not worse.champion
    alias = tracker.client().get_model_version_by_alias("recsys-cooccurrence", CHAMPION)
    assert str(alias.version) == champion.registered_version

    # a challenger that learned the cycle ties on the compared rows: kept (strictly better wins)
    tie = _track(tracker, _model(ITEM_IDS, ITEM_IDS), valid, "C")
    assert tie.gate.compared_rows == N - 1 and not tie.champion
    assert tie.gate.challenger_value == pytest.approx(tie.gate.champion_value)

    # a random split could put the champion's training items in the validation targets:
    # no re-scoring, the policy (keep) decides and says why
    rand = _track(tracker, _model(ITEM_IDS, ITEM_IDS), _validation(ITEM_IDS, "random"), "D")
    assert not rand.champion and rand.gate.champion_value is None
    assert "re-scoring the champion failed" in rand.gate.reason
    assert "'random'" in rand.gate.reason
