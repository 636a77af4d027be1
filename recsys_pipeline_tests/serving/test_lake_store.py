"""``serving.lake_store``: a moved or copied lake's MLflow store follows the lake, a store
sharing an artifact root outside the lake is left alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from recsys_pipeline.serving import lake_models as lm
from recsys_pipeline.serving.lake_store import URI_COLUMNS, relocate_store

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)


def _uri(lake: Path) -> str:
    return f"sqlite:///{lake / 'mlflow' / 'mlflow.db'}"


def _store(lake: Path, monkeypatch: pytest.MonkeyPatch, root: Path | None = None
           ) -> tuple[str, str]:
    """An MLflow store in ``lake`` as the pipeline makes it: an experiment whose artifact root
    is ``root`` (default ``<lake>/mlflow/artifacts``), a run with an artifact, a logged model
    registered as version 1 (``models:/`` source) and a run folder as version 2 (``file://``
    source). Returns the run id and the logged model's id."""
    from mlflow.tracking import MlflowClient

    (lake / "mlflow").mkdir(parents=True)
    uri = _uri(lake)
    client = MlflowClient(uri, uri)
    with monkeypatch.context() as env:  # the registry finds logged models through it
        env.setenv("MLFLOW_TRACKING_URI", uri)
        experiment = client.create_experiment(
            "recsys-pipeline", (root or lake / "mlflow" / "artifacts").as_uri())
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "hello", "notes/a.txt")
        model = client.create_logged_model(experiment, source_run_id=run.info.run_id)
        weights = lake / "w"
        weights.mkdir()
        (weights / "w.txt").write_text("weights")
        client.log_model_artifacts(model.model_id, str(weights))
        client.create_registered_model("recsys-x")
        client.create_model_version("recsys-x", f"models:/{model.model_id}", run.info.run_id,
                                    model_id=model.model_id)
        client.create_model_version("recsys-x", f"{run.info.artifact_uri}/notes",
                                    run.info.run_id)
        client.set_terminated(run.info.run_id)
    return run.info.run_id, model.model_id


def _uri_values(lake: Path) -> list[str]:
    """Every value of the store's artifact URI columns."""
    with sqlite3.connect(lake / "mlflow" / "mlflow.db") as conn:
        return [value for table, column, _ in URI_COLUMNS
                if (table, column) in {(table, row[1]) for row in
                                       conn.execute(f'PRAGMA table_info("{table}")')}
                for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}"')
                if isinstance(value, str) and value.startswith("file:")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_moved_store_points_into_its_lake(tmp_path, monkeypatch):
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    old = tmp_path / "old" / "lake"
    run_id, model_id = _store(old, monkeypatch)
    assert len(_uri_values(old)) == 6  # experiment, run, logged model, 2 storage, 1 source
    new = tmp_path / "new 50%_x" / "lake"  # % and _ are LIKE wildcards; space: %20 in URIs
    new.parent.mkdir()
    shutil.move(old, new)

    uri = lm.default_tracking_uri(new)  # what serving calls first
    root = (new / "mlflow" / "artifacts").as_uri()
    values = _uri_values(new)
    assert len(values) == 6 and all(v.startswith(root + "/") or v == root for v in values)
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/a.txt",
                                               tracking_uri=uri, dst_path=str(tmp_path))
    assert Path(path).read_text() == "hello"
    model = MlflowClient(uri, uri).get_logged_model(model_id)
    assert Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{model.artifact_location}/w.txt", tracking_uri=uri,
        dst_path=str(tmp_path))).read_text() == "weights"

    before = _sha(new / "mlflow" / "mlflow.db")
    assert relocate_store(new) == []  # idempotent: nothing more to do, nothing written
    assert _sha(new / "mlflow" / "mlflow.db") == before


def test_a_copy_is_relocated_and_the_original_untouched(tmp_path, monkeypatch):
    original = tmp_path / "original" / "lake"
    _store(original, monkeypatch)
    copy = tmp_path / "copy" / "lake"
    shutil.copytree(original, copy)
    [move] = relocate_store(copy)
    assert move.rows == 6 and not move.left_alone
    assert move.old_root == (original / "mlflow" / "artifacts").as_uri()
    assert all(v.startswith((copy / "mlflow" / "artifacts").as_uri()) for v in _uri_values(copy))
    assert all(v.startswith(move.old_root) for v in _uri_values(original))


def test_a_shared_artifact_root_outside_the_lake_is_left_alone(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    shared = tmp_path / "team" / "mlflow" / "artifacts"  # ends like a lake's root, by design
    _store(lake, monkeypatch, root=shared)
    db = lake / "mlflow" / "mlflow.db"
    before = _sha(db)
    [move] = relocate_store(lake)
    assert move.rows == 0 and "no folder of its 1 runs" in move.left_alone
    assert _sha(db) == before
    assert lm.default_tracking_uri(lake) == f"sqlite:///{db.resolve()}"
    assert _sha(db) == before


def test_a_root_whose_runs_are_only_partly_here_is_left_alone(tmp_path, monkeypatch):
    """A lake holding some of a root's run folders while others exist only under the root
    is no copy of it: the URIs stay, and the answer says why."""
    from mlflow.tracking import MlflowClient

    original = tmp_path / "original" / "lake"
    _store(original, monkeypatch)
    copy = tmp_path / "copy" / "lake"
    shutil.copytree(original, copy)
    uri = _uri(copy)
    client = MlflowClient(uri, uri)  # a run the copy logged into the original's root
    experiment = client.get_experiment_by_name("recsys-pipeline").experiment_id
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "late", "notes/b.txt")
    assert (original / "mlflow" / "artifacts" / run.info.run_id).is_dir()
    before = _sha(copy / "mlflow" / "mlflow.db")
    [move] = relocate_store(copy)
    assert move.rows == 0 and run.info.run_id in move.left_alone
    assert _sha(copy / "mlflow" / "mlflow.db") == before


def test_views_reports_what_it_did_with_the_store(tmp_path, monkeypatch, capsys):
    from recsys_pipeline.cli import main

    old = tmp_path / "old" / "lake"
    _store(old, monkeypatch)
    new = tmp_path / "new" / "lake"
    new.parent.mkdir()
    shutil.move(old, new)
    assert main(["--lake", str(new), "views"]) == 0
    out = capsys.readouterr().out
    assert (f"mlflow: 6 artifact URIs moved from {(old / 'mlflow' / 'artifacts').as_uri()} to "
            f"{(new / 'mlflow' / 'artifacts').as_uri()}") in out
    assert main(["--lake", str(new), "views"]) == 0
    assert "mlflow: nothing to move" in capsys.readouterr().out


def test_a_store_without_mlflow_tables_or_file_is_nothing_to_do(tmp_path):
    assert relocate_store(tmp_path / "no_lake") == []
    (tmp_path / "mlflow").mkdir()
    sqlite3.connect(tmp_path / "mlflow" / "mlflow.db").close()  # created, never migrated
    assert relocate_store(tmp_path) == []
    with sqlite3.connect(tmp_path / "mlflow" / "mlflow.db") as conn:  # an older schema: no
        conn.execute("CREATE TABLE experiments (artifact_location TEXT)")  # runs, no models
        conn.execute("INSERT INTO experiments VALUES (?)",
                     ((tmp_path.parent / "gone" / "mlflow" / "artifacts").as_uri(),))
    [move] = relocate_store(tmp_path)
    assert move.rows == 0 and "no folder of its 0 runs" in move.left_alone


def test_a_store_is_checked_once_per_process_until_its_file_changes(tmp_path, monkeypatch):
    from recsys_pipeline.serving import lake_store

    (tmp_path / "mlflow").mkdir()
    db = tmp_path / "mlflow" / "mlflow.db"
    sqlite3.connect(db).close()
    calls = []
    monkeypatch.setattr(lake_store, "relocate_store", lambda lake: calls.append(lake) or [])
    lake_store.ensure_relocated(tmp_path)
    lake_store.ensure_relocated(tmp_path)
    assert len(calls) == 1
    shutil.copy(db, tmp_path / "other.db")  # another store copied over it: a new file
    os.replace(tmp_path / "other.db", db)
    lake_store.ensure_relocated(tmp_path)
    assert len(calls) == 2


@pytest.mark.parametrize("named_by", ["argument", "absolute env", "relative env"])
def test_a_tracking_uri_naming_the_lakes_store_relocates_it(tmp_path, monkeypatch, named_by):
    """README's ``export MLFLOW_TRACKING_URI=sqlite:///$PWD/data_lake/mlflow/mlflow.db`` (or
    ``--tracking-uri``) opens the lake's own store: a moved lake's is relocated as with the
    default."""
    old = tmp_path / "old" / "lake"
    _store(old, monkeypatch)
    new = tmp_path / "new" / "lake"
    new.parent.mkdir()
    shutil.move(old, new)
    root = (new / "mlflow" / "artifacts").as_uri()
    given = None
    if named_by == "argument":
        given = _uri(new)
    elif named_by == "absolute env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", _uri(new))
    else:
        monkeypatch.chdir(new.parent)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///lake/mlflow/mlflow.db")
    uri = lm.default_tracking_uri(new, given)
    assert uri == (given or os.environ["MLFLOW_TRACKING_URI"])
    assert all(v.startswith(root) for v in _uri_values(new))


def test_a_tracking_uri_naming_another_store_leaves_the_lakes_alone(tmp_path, monkeypatch):
    from recsys_pipeline.mlflow_resource import MlflowResource
    from recsys_pipeline.resources import LakeResource

    old = tmp_path / "old" / "lake"
    _store(old, monkeypatch)
    new = tmp_path / "new" / "lake"
    new.parent.mkdir()
    shutil.move(old, new)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    before = _sha(new / "mlflow" / "mlflow.db")
    assert lm.default_tracking_uri(new, other) == other
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert MlflowResource(lake=LakeResource(root=str(new))).resolved_tracking_uri() == other
    assert _sha(new / "mlflow" / "mlflow.db") == before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _uri(new))  # the resource, named by the env
    MlflowResource(lake=LakeResource(root=str(new))).resolved_tracking_uri()
    assert all(v.startswith((new / "mlflow" / "artifacts").as_uri()) for v in _uri_values(new))
