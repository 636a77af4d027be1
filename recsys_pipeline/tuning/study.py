"""The Optuna study: TPE sampling, median pruning on each epoch's validation RMSE.

Every trial builds a model from its sampled params (``space.model_config_from_params``),
trains it on the train split with the shared loop (``training.loop.fit``: early stopping and
best-weight restore on valid) and returns its best validation RMSE; the test split is never
read here. After each epoch the trial reports ``valid_rmse`` at ``step = epoch``; the
``MedianPruner`` stops a trial whose best value so far is worse than the median of earlier
trials at the same epoch.

Tracking stays outside: :func:`tune` takes ``trial_scope``, a context-manager factory entered
once per trial with a :class:`TrialOutcome` (the orchestration layer opens a nested MLflow run
there); it yields an ``on_epoch`` callback, and the outcome's ``state``, ``value`` and
``history`` are filled in before the scope exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import optuna

from recsys_pipeline.training.experiment import ExperimentData, OnEpoch, build_model
from recsys_pipeline.training.loop import TrainConfig, fit
from recsys_pipeline.tuning.space import (
    SearchSpace,
    check_family,
    model_config_from_params,
    suggest_params,
)

logger = logging.getLogger(__name__)

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


@dataclass(frozen=True)
class TuneSettings:
    """How long and how each trial trains.

    Attributes:
        n_trials: Most trials to run.
        timeout_s: Stop starting trials after this many seconds (None: no limit).
        seed: Seeds the TPE sampler, each trial's weights and shuffles, and the importance
            evaluator; the same seed gives the same trials (with no timeout).
        epochs: Most epochs per trial.
        patience: Early-stopping patience per trial (None: never stop early).
        batch_size: Rows per gradient step.
        tpe_startup_trials: Random trials before TPE starts modelling.
        pruner_startup_trials: Trials that run to the end before any is pruned.
        pruner_warmup_epochs: Epochs of each trial that are never pruned.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        rating_range: ``(rating_min, rating_max)`` of every model (the release's scale, e.g.
            1..5 for ml-1m); None keeps the configs' 0.5..5.
    """

    n_trials: int = 10
    timeout_s: float | None = None
    seed: int = 0
    epochs: int = 8
    patience: int | None = 2
    batch_size: int = 1024
    tpe_startup_trials: int = 5
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 1
    device: str = "auto"
    rating_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.n_trials < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"n_trials={self.n_trials}, epochs={self.epochs} and "
                             f"batch_size={self.batch_size} must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s} must be > 0 or None")
        if min(self.tpe_startup_trials, self.pruner_startup_trials,
               self.pruner_warmup_epochs) < 0:
            raise ValueError("tpe_startup_trials, pruner_startup_trials and "
                             "pruner_warmup_epochs must be >= 0")

    def train_config(self, params: dict[str, Any]) -> TrainConfig:
        """Loop options of a trial (or of the final model) with the tuned lr / weight decay."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                           lr=float(params["lr"]),
                           weight_decay=float(params.get("weight_decay", 0.0)),
                           patience=self.patience, seed=self.seed, device=self.device)


@dataclass
class TrialOutcome:
    """One trial as the tracking scope sees it.

    Attributes:
        number: Optuna's trial number (0-based).
        params: The sampled params.
        state: ``"RUNNING"``, then ``"COMPLETE"``, ``"PRUNED"`` or ``"FAIL"``.
        value: Best valid RMSE of a complete trial (None otherwise).
        best_epoch: Epoch of that value (0 when none).
        history: Per-epoch metrics of the epochs run.
        error: The message of a failed trial.
    """

    number: int
    params: dict[str, Any]
    state: str = "RUNNING"
    value: float | None = None
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    error: str = ""


TrialScope = Callable[[TrialOutcome], AbstractContextManager[OnEpoch | None]]


@contextlib.contextmanager
def no_scope(outcome: TrialOutcome) -> Iterator[OnEpoch | None]:
    """The default trial scope: no tracking."""
    yield None


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        study: The finished Optuna study.
        family: The tuned model family.
        best_params: Params of the best complete trial.
        best_value: Its best valid RMSE.
        best_trial: Its number.
        model_config: The model config the best params build.
        train_config: The loop options the best params build.
        states: Number of trials per final state (COMPLETE, PRUNED, FAIL).
    """

    study: optuna.Study
    family: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    model_config: Any
    train_config: TrainConfig
    states: dict[str, int]


def make_study(settings: TuneSettings, storage: str | None = None,
               name: str | None = None) -> optuna.Study:
    """A minimising study with a seeded ``TPESampler`` and a ``MedianPruner``; in memory, or
    in ``storage`` (an Optuna storage URL, e.g. ``sqlite:///study.db``) under ``name``,
    loading the study there when it exists (resuming it)."""
    sampler = optuna.samplers.TPESampler(seed=settings.seed,
                                         n_startup_trials=settings.tpe_startup_trials)
    # steps are 1-based epochs and optuna prunes from step n_warmup_steps on: + 1 keeps the
    # first pruner_warmup_epochs epochs safe
    pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                         n_warmup_steps=settings.pruner_warmup_epochs + 1)
    return optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner,
                               storage=storage, study_name=name,
                               load_if_exists=storage is not None)


def _objective(data: ExperimentData, family: str, space: SearchSpace, settings: TuneSettings,
               trial_scope: TrialScope) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, family, space)
        model_config = model_config_from_params(family, params, settings.seed,
                                                settings.rating_range)
        outcome = TrialOutcome(trial.number, dict(params))
        with trial_scope(outcome) as on_epoch:

            def report(epoch: int, metrics: dict[str, float]) -> None:
                outcome.history.append({"epoch": float(epoch), **metrics})
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
                trial.report(metrics["valid_rmse"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"trial {trial.number} pruned at epoch {epoch}: "
                                             f"valid_rmse={metrics['valid_rmse']:.4f}")

            pruned: optuna.TrialPruned | None = None
            try:
                model = build_model(model_config, data.n_users, data.n_items, data.item_features)
                fitted = fit(model, data.train, data.valid, settings.train_config(params), report)
            except optuna.TrialPruned as exc:
                outcome.state, pruned = PRUNED, exc
            except ValueError as exc:  # e.g. a diverging learning rate: that trial fails
                outcome.state, outcome.error = FAIL, str(exc)
                raise
            else:
                outcome.state, outcome.value = COMPLETE, fitted.best_metric
                outcome.best_epoch = fitted.best_epoch
        if pruned is not None:  # raised only now, so the tracking scope ended normally
            raise pruned
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        return float(outcome.value)  # type: ignore[arg-type]

    return objective


def tune(
    data: ExperimentData,
    family: str,
    space: SearchSpace | None = None,
    settings: TuneSettings | None = None,
    trial_scope: TrialScope = no_scope,
    enqueue: Sequence[dict[str, Any]] = (),
    storage: str | None = None,
    study_name: str | None = None,
) -> TuneResult:
    """Search ``family``'s hyperparameters on the validation split with Optuna.

    Args:
        data: Splits (only train and valid are used) and index sizes; DeepFM uses
            ``data.item_features``.
        family: One of ``space.TUNABLE_FAMILIES``.
        space: Bounds of the search (defaults: ``SearchSpace()``).
        settings: Trials, timeout, seeds and per-trial training (defaults: ``TuneSettings()``).
        trial_scope: Context-manager factory entered once per trial (see the module doc).
        enqueue: Param dicts to try first, in order (e.g. the current defaults).
        storage: An Optuna storage URL holding the study (None: in memory). A study already
            there is resumed: its completed and pruned trials count towards ``n_trials`` and
            inform the sampler; a trial that failed or was cut short is tried again with new
            params. The remaining trials can differ from an uninterrupted run's.
        study_name: The study's name in ``storage``.

    Returns:
        The study, the best params and value, and the configs they build.

    Raises:
        ValueError: A family that cannot be tuned, bad bounds, or no trial completing.
    """
    check_family(family)
    space, settings = space or SearchSpace(), settings or TuneSettings()
    study = make_study(settings, storage, study_name)
    done = sum(t.state.name in (COMPLETE, PRUNED) for t in study.trials)
    if study.trials:
        logger.info("resuming study %s: %d of %d trials finished", study_name, done,
                    settings.n_trials)
    else:
        for params in enqueue:
            study.enqueue_trial(dict(params))
    if done < settings.n_trials:
        study.optimize(_objective(data, family, space, settings, trial_scope),
                       n_trials=settings.n_trials - done, timeout=settings.timeout_s,
                       catch=(ValueError,))
    states = {name: sum(t.state.name == name for t in study.trials)
              for name in (COMPLETE, PRUNED, FAIL)}
    if states[COMPLETE] == 0:
        raise ValueError(f"tuning {family}: no trial completed ({states}); widen the time "
                         "limit, raise pruner_startup_trials or lower the learning-rate bounds")
    best = study.best_trial
    value = float(best.value) if best.value is not None else math.nan
    logger.info("tuned %s: best valid_rmse=%.4f (trial %d) %s; %s", family, value, best.number,
                best.params, states)
    return TuneResult(study=study, family=family, best_params=dict(best.params),
                      best_value=value, best_trial=best.number,
                      model_config=model_config_from_params(
                          family, best.params, settings.seed, settings.rating_range),
                      train_config=settings.train_config(best.params), states=states)


def settings_dict(settings: TuneSettings, space: SearchSpace) -> dict[str, Any]:
    """Settings and bounds as flat JSON-ready ``tune.*`` / ``space.*`` entries (MLflow params)."""
    out = {f"tune.{k}": v for k, v in dataclasses.asdict(settings).items()}
    out.update({f"space.{k}": list(v) for k, v in dataclasses.asdict(space).items()})
    return out
