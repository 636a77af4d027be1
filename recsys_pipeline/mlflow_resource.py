"""``MlflowResource``: where runs and the model registry live, and the champion gate's settings.

By default tracking needs no server: runs and the model registry live in a SQLite file in the
lake (``sqlite:///<lake>/mlflow/mlflow.db``) with artifacts beside it
(``<lake>/mlflow/artifacts``); the resource's ``tracking_uri`` (or ``$MLFLOW_TRACKING_URI``)
points it at a server instead. The store keeps absolute artifact URIs: after the lake was moved
or copied they are rewritten to the lake's own (``serving.lake_store``) before it is used. The
tag names every run carries are defined here too.
"""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping

import dagster as dg
import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from recsys_pipeline.champion import GatePolicy
from recsys_pipeline.evaluation.selection import INCOMPARABLE_POLICIES
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.serving.lake_store import ensure_relocated, names_store

DEFAULT_EXPERIMENT = "recsys-pipeline"
TRACKING_ENV, REGISTRY_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"
# tags every run carries
TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET = "dagster.asset_key"
TAG_FAMILY = "model.family"
SPLIT_TAGS = {name: f"data.{name}_sha256" for name in ("train", "valid", "test")}
TAG_TRAIN_SHA, TAG_VALID_SHA = SPLIT_TAGS["train"], SPLIT_TAGS["valid"]
# the process that runs a run: a run left RUNNING by a process that is gone (killed by the OOM
# killer, SIGKILL, a lost machine) is ended KILLED by the next run started on the same host
TAG_HOST, TAG_PID, TAG_ENDED = "process.host", "process.pid", "process.ended"

logger = logging.getLogger(__name__)


def process_tags() -> dict[str, str]:
    """``process.host`` and ``process.pid`` of the calling process (every run carries them)."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metric_key(name: str) -> str:
    """An MLflow-safe metric name (MLflow rejects ``@``): ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def registered_name(family: str) -> str:
    """The registered model of a family, e.g. ``recsys-mf``."""
    return f"recsys-{family}"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + model registry; by default a SQLite file in the lake, no server."""

    lake: dg.ResourceDependency[LakeResource]
    # "" = $MLFLOW_TRACKING_URI when set, else sqlite:///<lake>/mlflow/mlflow.db
    tracking_uri: str = ""
    # "" = the tracking URI
    registry_uri: str = ""
    # the experiment holding one run per trained model
    experiment_name: str = DEFAULT_EXPERIMENT
    # artifact root of a newly created experiment; "" = <lake>/mlflow/artifacts for the
    # default SQLite store, the server's default for a configured tracking URI
    artifact_location: str = ""
    # register each logged model as a version of recsys-<family> and move its champion alias
    register_models: bool = True
    # champion gate: a new version takes the champion alias only when its validation metric
    # beats the champion's on the same data by more than this (metric units; 0 = strictly)
    champion_margin: float = 0.0
    # when scores cannot be compared (ranking metric on changed data): "keep" or "promote"
    champion_when_incomparable: str = "keep"
    # also log each model's ONNX export (checked against torch with onnxruntime; about 1 s
    # per demo model on a 2-core CPU) beside its original-id pyfunc; needs onnx, onnxscript
    # and onnxruntime (a run without them tags export.onnx_skipped)
    log_onnx: bool = True

    def gate_policy(self) -> GatePolicy:
        """The champion gate's settings (validated)."""
        if self.champion_when_incomparable not in INCOMPARABLE_POLICIES:
            raise ValueError(f"mlflow resource: champion_when_incomparable="
                             f"{self.champion_when_incomparable!r}, expected one of "
                             f"{', '.join(INCOMPARABLE_POLICIES)}")
        if not self.champion_margin >= 0:
            raise ValueError(f"mlflow resource: champion_margin={self.champion_margin!r} must "
                             "be >= 0")
        return GatePolicy(self.champion_margin, self.champion_when_incomparable)

    def resolved_tracking_uri(self) -> str:
        """The tracking URI in effect (see the field comments for the order). When it opens
        the lake's own store (by default, or named by the URI) and the lake was moved or
        copied, the store is first pointed at the lake's own artifacts
        (``serving.lake_store.ensure_relocated``; not when ``artifact_location`` is set)."""
        uri = self.tracking_uri or os.environ.get(TRACKING_ENV)
        if not uri:
            db = self.lake.path("mlflow", "mlflow.db")
            db.parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{db}"
        if not self.artifact_location and names_store(self.lake.path(), uri):
            ensure_relocated(self.lake.path())
        return uri

    def resolved_registry_uri(self) -> str:
        """The model registry URI in effect."""
        return self.registry_uri or self.resolved_tracking_uri()

    def _artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if self.tracking_uri or os.environ.get(TRACKING_ENV):
            return None
        return self.lake.path("mlflow", "artifacts").as_uri()

    def ui_command(self) -> str:
        """The shell command that opens the MLflow UI on these runs."""
        return f"mlflow ui --backend-store-uri {self.resolved_tracking_uri()}"

    def client(self) -> MlflowClient:
        """A client bound to this resource's URIs (no global state)."""
        return MlflowClient(self.resolved_tracking_uri(), self.resolved_registry_uri())

    def experiment_id(self, create: bool = True) -> str | None:
        """The experiment's id, creating it when missing (None when missing and not created)."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        if not create:
            return None
        return client.create_experiment(self.experiment_name, self._artifact_location())

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """Point mlflow's global (fluent) API at this resource; restore the previous URIs and
        environment afterwards, so nothing leaks into later runs or tests."""
        saved = {k: os.environ.get(k) for k in (TRACKING_ENV, REGISTRY_ENV)}
        mlflow.set_tracking_uri(self.resolved_tracking_uri())
        mlflow.set_registry_uri(self.resolved_registry_uri())
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[TRACKING_ENV])
            mlflow.set_registry_uri(saved[REGISTRY_ENV])
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[Run]:
        """An active MLflow run in the experiment; it ends FINISHED, or FAILED on an exception."""
        experiment_id = self.experiment_id()
        self.end_orphaned_runs(experiment_id)
        mine = {**process_tags(), **tags}
        with self.activated(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                                tags=mine) as active:
            yield mlflow.get_run(active.info.run_id)

    def end_orphaned_runs(self, experiment_id: str) -> list[str]:
        """End KILLED the experiment's RUNNING runs whose process (``process.pid`` on this
        host) is gone, tagging ``process.ended`` with why; returns their run ids. A killed
        training step cannot end its own run, and the MLflow UI would show it running for
        ever. Runs of other hosts, or without the tags, are left alone."""
        client, host = self.client(), socket.gethostname()
        running = client.search_runs(
            [experiment_id], filter_string=f"attributes.status = 'RUNNING' and "
                                           f"tags.`{TAG_HOST}` = '{host}'", max_results=5000)
        ended = []
        for run in running:
            pid = run.data.tags.get(TAG_PID, "")
            if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
                continue
            client.set_tag(run.info.run_id, TAG_ENDED, f"process {pid} on {host} was gone when "
                                                       "a later run started; ended KILLED")
            client.set_terminated(run.info.run_id, "KILLED")
            logger.warning("MLflow run %s (%s) was left RUNNING by process %s, which is gone: "
                           "ended KILLED", run.info.run_id, run.info.run_name, pid)
            ended.append(run.info.run_id)
        return ended

    def latest_runs(self, train_sha256: str) -> list[Run]:
        """Latest FINISHED run of each model asset and family trained on this train split
        (``models/tuned_model`` holds whichever family was tuned last; each tuned family keeps
        its row)."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return []
        runs = self.client().search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_TRAIN_SHA}` = '{train_sha256}' "
                          "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=5000)
        latest: dict[tuple[str, str], Run] = {}
        for run in runs:
            tags = run.data.tags  # one row per asset (models/tuned_model beside models/mf_model)
            key = (tags.get(TAG_ASSET) or run.info.run_name or "", tags.get(TAG_FAMILY, ""))
            latest.setdefault(key, run)
        return list(latest.values())
