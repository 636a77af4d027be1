"""Core tuning on planted data: bounds, pruning, determinism, trial scopes, errors."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import optuna
import pytest

from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig
from recsys_pipeline.training.experiment import ExperimentData, ItemFeatures, OnEpoch
from recsys_pipeline.tuning import (
    COMPLETE,
    PRUNED,
    SearchSpace,
    TrialOutcome,
    TuneSettings,
    model_config_from_params,
    parse_hidden,
    tune,
)
from recsys_pipeline.tuning.plots import history_png, importance_png
from recsys_pipeline_tests.models.planted import Planted

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST = TuneSettings(n_trials=3, epochs=2, batch_size=128, tpe_startup_trials=1, device="cpu")
SPACE = SearchSpace(lr=(2e-3, 2e-2), weight_decay=(1e-6, 1e-4), l2=(1e-3, 0.1),
                    embedding_dims=(4, 8), dropout=(0.0, 0.3), hidden=((8,), (16, 8)))
PNG = b"\x89PNG"


def test_best_params_within_bounds(planted_data: ExperimentData) -> None:
    result = tune(planted_data, "mlp", SPACE, FAST)
    assert len(result.study.trials) == 3 and result.states[COMPLETE] == 3
    for trial in result.study.trials:
        p = trial.params
        assert set(p) == {"lr", "weight_decay", "embedding_dim", "dropout", "hidden"}
        assert SPACE.lr[0] <= p["lr"] <= SPACE.lr[1]
        assert SPACE.weight_decay[0] <= p["weight_decay"] <= SPACE.weight_decay[1]
        assert SPACE.dropout[0] <= p["dropout"] <= SPACE.dropout[1]
        assert p["embedding_dim"] in SPACE.embedding_dims
        assert parse_hidden(p["hidden"]) in SPACE.hidden
    values = [t.value for t in result.study.trials]
    assert result.best_value == min(values) and math.isfinite(result.best_value)
    best = result.best_params
    assert result.model_config == MLPConfig(
        user_dim=best["embedding_dim"], item_dim=best["embedding_dim"],
        hidden=parse_hidden(best["hidden"]), dropout=best["dropout"], seed=FAST.seed)
    assert result.train_config.lr == best["lr"]
    assert result.train_config.weight_decay == best["weight_decay"]


@pytest.mark.parametrize(("family", "config_type", "tuned"), [
    ("mf", MFConfig, {"lr", "embedding_dim", "l2"}),
    ("neumf", NeuMFConfig, {"lr", "weight_decay", "embedding_dim", "dropout", "hidden"}),
    ("deepfm", DeepFMConfig, {"lr", "weight_decay", "embedding_dim", "dropout", "hidden"}),
])
def test_every_family_tunes_three_or_more_params(
    planted_data: ExperimentData, planted: Planted, family: str, config_type: type,
    tuned: set[str],
) -> None:
    features = ItemFeatures(planted.item_genres, planted.item_year_bucket, 4)
    data = dataclasses.replace(planted_data, item_features=features)
    settings = dataclasses.replace(FAST, n_trials=2, epochs=1)
    result = tune(data, family, SPACE, settings)
    assert isinstance(result.model_config, config_type)
    assert set(result.best_params) == tuned and len(tuned) >= 3


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_worse_trial_is_pruned(planted_data: ExperimentData, warmup: int) -> None:
    """A first trial with a good learning rate, then one too small to move: the median pruner
    (no startup allowance) must stop the second right after its ``warmup`` safe epochs."""
    settings = dataclasses.replace(FAST, n_trials=2, epochs=4, patience=None,
                                   pruner_startup_trials=1, pruner_warmup_epochs=warmup)
    seen: list[TrialOutcome] = []

    @contextlib.contextmanager
    def scope(outcome: TrialOutcome) -> Iterator[OnEpoch | None]:
        yield None
        seen.append(outcome)

    result = tune(planted_data, "mf", SPACE, settings, scope, enqueue=[
        {"lr": 0.02, "embedding_dim": 8, "l2": 0.01},
        {"lr": 2e-3, "embedding_dim": 8, "l2": 0.01}])
    good, bad = result.study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert len(good.intermediate_values) == 4
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert list(bad.intermediate_values) == list(range(1, warmup + 2))  # epochs run
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    assert [o.state for o in seen] == [COMPLETE, PRUNED]
    assert result.states == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0}
    assert result.best_trial == 0


def test_same_seed_same_search(planted_data: ExperimentData) -> None:
    first = tune(planted_data, "mf", SPACE, FAST)
    again = tune(planted_data, "mf", SPACE, FAST)
    other = tune(planted_data, "mf", SPACE, dataclasses.replace(FAST, seed=1))
    assert again.best_params == first.best_params
    assert [t.value for t in again.study.trials] == [t.value for t in first.study.trials]
    assert [t.params for t in other.study.trials] != [t.params for t in first.study.trials]


def test_trial_scope_sees_every_epoch(planted_data: ExperimentData) -> None:
    epochs: dict[int, list[int]] = {}

    @contextlib.contextmanager
    def scope(outcome: TrialOutcome) -> Iterator[OnEpoch | None]:
        epochs[outcome.number] = []
        yield lambda epoch, metrics: epochs[outcome.number].append(epoch)
        assert outcome.state == COMPLETE and outcome.value is not None

    settings = dataclasses.replace(FAST, n_trials=2, patience=None)
    tune(planted_data, "mf", SPACE, settings, scope)
    assert epochs == {0: [1, 2], 1: [1, 2]}


def test_timeout_stops_the_search(planted_data: ExperimentData) -> None:
    settings = dataclasses.replace(FAST, n_trials=1000, epochs=1, timeout_s=0.05)
    result = tune(planted_data, "mf", SPACE, settings)
    assert 1 <= len(result.study.trials) < 1000


@pytest.mark.parametrize(("family", "message"), [
    ("bias", "closed form"), ("popularity", "closed form"), ("svd", "mf, mlp, neumf, deepfm")])
def test_untunable_family_is_a_clear_error(planted_data: ExperimentData, family: str,
                                           message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tune(planted_data, family, SPACE, FAST)


@pytest.mark.parametrize("bad", [{"lr": (0.0, 0.1)}, {"dropout": (0.2, 1.0)},
                                 {"embedding_dims": ()}, {"hidden": ((),)}])
def test_bad_bounds_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SearchSpace(**bad)


def test_plots_are_png(planted_data: ExperimentData) -> None:
    result = tune(planted_data, "mf", SPACE, dataclasses.replace(FAST, n_trials=2, epochs=1))
    assert history_png(result.study, "mf").startswith(PNG)
    assert importance_png(result.study, "mf").startswith(PNG)
    single = tune(planted_data, "mf", SPACE, dataclasses.replace(FAST, n_trials=1, epochs=1))
    assert importance_png(single.study, "mf").startswith(PNG)  # "needs 2 trials" image


def test_rating_range_reaches_every_config() -> None:
    params = {"embedding_dim": 4, "l2": 0.01, "hidden": "8", "dropout": 0.1}
    for family in ("mf", "mlp", "neumf", "deepfm"):
        config = model_config_from_params(family, params, 0, (1.0, 5.0))
        assert (config.rating_min, config.rating_max) == (1.0, 5.0)
        assert model_config_from_params(family, params, 0).rating_min == 0.5
