"""Optuna's optimization-history and parameter-importance plots as PNG bytes (matplotlib)."""

from __future__ import annotations

import io
import warnings

import matplotlib
import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.visualization import matplotlib as optuna_plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MIN_TRIALS_FOR_IMPORTANCE = 2


def _png(fig: plt.Figure) -> bytes:
    try:
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _complete(study: optuna.Study) -> int:
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def history_png(study: optuna.Study, title: str) -> bytes:
    """Each complete trial's valid RMSE and the best so far (``plot_optimization_history``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna_plots.plot_optimization_history(study, target_name="valid RMSE")
    ax.set_title(f"{title}: optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(ax.figure)


def importance_png(study: optuna.Study, title: str, seed: int = 0) -> bytes:
    """fANOVA importance of each param for valid RMSE (``plot_param_importances``).

    With fewer than two complete trials there is nothing to compare; the image says so
    instead of raising, so a short tuning run still logs both plots.
    """
    if _complete(study) < MIN_TRIALS_FOR_IMPORTANCE:
        fig, ax = plt.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, f"parameter importance needs >= {MIN_TRIALS_FOR_IMPORTANCE} "
                f"complete trials\n({_complete(study)} of {len(study.trials)} completed)",
                ha="center", va="center")
        ax.set_title(f"{title}: parameter importances")
        return _png(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna_plots.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), target_name="valid RMSE")
    ax.set_title(f"{title}: parameter importances (fANOVA)", loc="left")  # replaces Optuna's
    return _png(ax.figure)


def param_importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """``{param: fANOVA importance}`` (empty with fewer than two complete trials)."""
    if _complete(study) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    return dict(optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=seed)))
