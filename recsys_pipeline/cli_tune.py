"""``recsys-pipeline tune``: the Optuna search of ``tune_job``, run in process from the shell.

The handler executes ``tune_job`` (asset ``models/tuned_model``) exactly as Dagster does,
with the run config built from the flags, on the lake given by ``--lake``: against the
instance of ``$DAGSTER_HOME`` when set (so the run shows in the UI), else an ephemeral one.
Dagster is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from recsys_pipeline.tuning.space import TUNABLE_FAMILIES, check_family

NODE = "models__tuned_model"
SPLITS = ("train", "valid", "test")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand to the main parser's subparsers."""
    t = sub.add_parser(
        "tune", help="tune a model's hyperparameters with Optuna, then train the best",
        description="Optuna search (TPE sampler, median pruner on each epoch's validation "
                    "RMSE) over a model family's hyperparameters on the validation split, one "
                    "nested MLflow run per trial under one parent; the best configuration is "
                    "saved to <lake>/tuning/<family>/best_config.json, trained, evaluated on "
                    "test and registered as recsys-<family>. Runs tune_job in process "
                    "(in $DAGSTER_HOME's instance when set). Needs a prepared lake "
                    "(prepare_job).")
    t.add_argument("--model", metavar="NAME", default="mf",
                   help=f"family to tune: {', '.join(TUNABLE_FAMILIES)} (default mf)")
    t.add_argument("--trials", type=int, default=10, metavar="N",
                   help="most trials (default 10)")
    t.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop starting trials after S seconds (default: no limit)")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the sampler and every trial's training (default 0)")
    t.add_argument("--epochs", type=int, default=8, metavar="N",
                   help="most epochs per trial and of the tuned model (default 8)")
    t.set_defaults(func=run_tune)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``tune_job`` run config the flags stand for; ValueError on a bad flag."""
    args.model = args.model.removesuffix("_model")  # mf_model, as other commands take it
    check_family(args.model)
    if args.trials < 1 or args.epochs < 1:
        raise ValueError(f"--trials {args.trials} and --epochs {args.epochs} must be >= 1")
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        raise ValueError(f"--timeout {args.timeout} must be a finite number of seconds > 0 "
                         "(leave it out for no limit)")
    config = {"model": args.model, "n_trials": args.trials, "timeout_s": args.timeout,
              "seed": args.seed, "epochs": args.epochs}
    # INFO: the per-trial and per-epoch lines, without Dagster's DEBUG event stream
    return {"ops": {NODE: {"config": config}},
            "loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _check_lake(lake: Path) -> None:
    for name in SPLITS:
        path = lake / "prepared" / "splits" / f"{name}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such split file; run prepare_job on the lake "
                                    f"{lake} first")


def root_cause(error: Any) -> str:
    """The innermost message of a Dagster ``SerializableErrorInfo`` chain (the user's error,
    not Dagster's "Error occurred while executing op" wrapper)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def execute_tune_job(lake: str, config: dict[str, Any]) -> Any:
    """Run ``tune_job`` in process on ``lake``; return the materialization's metadata values.

    Raises:
        ValueError: The run failed (the message of the failing step).
    """
    import dagster as dg

    from recsys_pipeline.assets.ingest import ingest_assets
    from recsys_pipeline.assets.prepare import prepare_assets
    from recsys_pipeline.assets.tune import tune_assets, tune_job
    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.resources import build_resources

    # the upstream assets are there only to be read from the lake (the job selects "tune")
    defs = dg.Definitions(
        assets=[*ingest_assets, *prepare_assets, *tune_assets], jobs=[tune_job],
        executor=dg.in_process_executor,
        resources={**build_resources(lake), **build_train_resources(lake)})
    job = defs.resolve_job_def("tune_job")
    instance = (dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME")
                else dg.DagsterInstance.ephemeral())
    with instance:
        result = job.execute_in_process(run_config=config, instance=instance,
                                        raise_on_error=False)
    if not result.success:
        errors = [root_cause(e.step_failure_data.error) for e in result.all_events
                  if e.is_step_failure and e.step_failure_data.error is not None]
        raise ValueError(f"tune_job failed: {errors[-1] if errors else 'see the Dagster log'}")
    (materialization,) = result.asset_materializations_for_node(NODE)
    return {k: v.value for k, v in materialization.metadata.items()}


def summary(meta: dict[str, Any], ui_command: str) -> str:
    """The lines printed after a tuning run."""
    import json

    best = json.loads(Path(meta["best_config_path"]).read_text(encoding="utf-8"))
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in best["best_params"].items())
    version = meta.get("registered_version") or "not registered"
    lines = [
        f"tuned {meta['family']}: {meta['trials_complete']} trials complete, "
        f"{meta['trials_pruned']} pruned, {meta['trials_failed']} failed",
        f"best params (trial {meta['best_trial']}): {params}",
        f"best valid RMSE {meta['best_valid_rmse']:.4f}; tuned model test RMSE "
        f"{meta.get('test_rmse', float('nan')):.4f}",
        f"MLflow parent run {meta['mlflow_parent_run_id']} (tuned model run "
        f"{meta['mlflow_run_id']}, recsys-{meta['family']} version {version}, "
        f"champion: {'yes' if meta['champion'] else 'no'})",
        f"best config saved to {meta['best_config_path']}",
        f"see the trials: {ui_command}",
    ]
    return "\n".join(lines)


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``recsys-pipeline tune``: run ``tune_job`` and print the summary."""
    config = run_config(args)
    lake = Path(args.lake)
    _check_lake(lake)
    meta = execute_tune_job(str(lake), config)
    from recsys_pipeline.model_io import build_train_resources

    print(summary(meta, build_train_resources(str(lake))["mlflow"].ui_command()))
    return 0
