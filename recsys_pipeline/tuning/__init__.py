"""Hyperparameter tuning with Optuna (core: no dagster, no mlflow).

``space`` holds each family's search space and the configs a trial's params build, ``study``
the seeded TPE + median-pruner search over the validation split, ``plots`` Optuna's
optimization-history and parameter-importance plots as PNG bytes.
"""

from recsys_pipeline.tuning.space import (
    TUNABLE_FAMILIES,
    SearchSpace,
    check_family,
    hidden_label,
    model_config_from_params,
    parse_hidden,
    suggest_params,
)
from recsys_pipeline.tuning.study import (
    COMPLETE,
    FAIL,
    PRUNED,
    TrialOutcome,
    TrialScope,
    TuneResult,
    TuneSettings,
    make_study,
    settings_dict,
    tune,
)

__all__ = [
    "COMPLETE", "FAIL", "PRUNED", "TUNABLE_FAMILIES", "SearchSpace", "TrialOutcome",
    "TrialScope", "TuneResult", "TuneSettings", "check_family", "hidden_label", "make_study",
    "model_config_from_params", "parse_hidden", "settings_dict", "suggest_params", "tune",
]
