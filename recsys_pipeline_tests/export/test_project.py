"""``reports/item_projection`` and the ``export`` / ``project`` CLI on a tiny lake."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from recsys_pipeline.assets.project import (
    TAG_SOURCE_RUN,
    ItemProjectionConfig,
    item_projection_report,
    project_job,
)
from recsys_pipeline.cli_export import add_parsers
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.serving.retrieval import read_vectors
from recsys_pipeline.tracking import TAG_ASSET
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, N_USERS, USER_IDS, World

PNG = b"\x89PNG\r\n\x1a\n"


def _materialize(lake: Path, tracker, **config) -> dg.MaterializeResult:
    result = dg.materialize(
        [item_projection_report], resources={"lake": LakeResource(root=str(lake)),
                                             "mlflow": tracker},
        run_config=dg.RunConfig({"reports__item_projection": ItemProjectionConfig(**config)}),
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result


def test_projection_asset_writes_projector_files_plots_and_a_run(
        world_lake: Path, tracker, world: World) -> None:
    # a finished training run of mf_model: the projection names it as its source
    with tracker.start_run("mf_model", {TAG_ASSET: "models/mf_model"}) as source:
        pass
    result = _materialize(world_lake, tracker, tsne_max_items=30, perplexity=5.0)
    meta = result.asset_materializations_for_node("reports__item_projection")[0].metadata
    folder = world_lake / "reports" / "item_projection" / "mf_model"
    vectors = np.loadtxt(folder / "vectors.tsv", delimiter="\t")
    assert vectors.shape == (N_ITEMS, world.models["mf"].config.n_factors)
    lines = (folder / "metadata.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["title", "genres"] and len(lines) == N_ITEMS + 1
    assert lines[1 + 3].split("\t")[0] == "Alien (1979)"  # row order = item_idx order
    assert lines[1 + 3].split("\t")[2] == str(ITEM_IDS[3])
    assert (folder / "pca.png").read_bytes()[:8] == PNG
    assert (folder / "tsne.png").read_bytes()[:8] == PNG
    assert meta["model"].value == "mf_model" and meta["tsne_items"].value == 30
    assert meta["dagster/row_count"].value == N_ITEMS
    assert "data:image/png;base64" in meta["pca_plot"].value
    variance = meta["pca_explained_variance"].value
    assert len(variance) == 2 and 0 < variance[1] <= variance[0] <= 1
    run = tracker.client().get_run(meta["mlflow_run_id"].value)
    assert run.info.run_name == "item_projection-mf_model"
    assert run.data.tags[TAG_SOURCE_RUN] == source.info.run_id
    logged = {a.path for a in tracker.client().list_artifacts(run.info.run_id,
                                                              "item_projection")}
    assert {"item_projection/vectors.tsv", "item_projection/metadata.tsv",
            "item_projection/pca.png", "item_projection/tsne.png"} <= logged
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_projection_asset_pca_only_and_a_named_model(world_lake: Path, tracker) -> None:
    result = _materialize(world_lake, tracker, model="deepfm", methods=["pca"])
    meta = result.asset_materializations_for_node("reports__item_projection")[0].metadata
    folder = world_lake / "reports" / "item_projection" / "deepfm_model"
    assert meta["tsne_items"].value == 0 and "tsne_plot" not in meta
    assert (folder / "pca.png").is_file() and not (folder / "tsne.png").exists()
    assert project_job.name == "project_job"


def test_projection_of_a_model_without_embeddings_fails(world_lake: Path, tracker) -> None:
    with pytest.raises(ValueError, match="the bias model has no item embeddings to project; "
                                         "models with them: deepfm, mf, mlp, neumf, two_tower"):
        dg.materialize([item_projection_report],
                       resources={"lake": LakeResource(root=str(world_lake)), "mlflow": tracker},
                       run_config=dg.RunConfig({"reports__item_projection":
                                             ItemProjectionConfig(model="bias")}),
                       instance=dg.DagsterInstance.ephemeral())


def _cli(lake: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake")
    sub = parser.add_subparsers(dest="command")
    add_parsers(sub)
    args = parser.parse_args(["--lake", str(lake), *argv])
    return args.func(args)


@pytest.mark.parametrize("command", ["export", "project"])
def test_cli_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli(Path("lake"), command, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--run-id" in out and "--out" in out


def test_cli_export_writes_onnx_maps_and_description(
        world_lake: Path, world: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    out = tmp_path / "exported"
    assert _cli(world_lake, "export", "--model", "mf", "--out",
                str(out)) == 0
    printed = capsys.readouterr().out
    assert "max abs difference onnxruntime vs torch" in printed
    info = json.loads((out / "export.json").read_text())
    assert info["opset"] == 18 and info["model"] == "mf_model"
    assert info["max_abs_diff_vs_torch"] < 1e-4 and info["outputs"]["scores"][0] == "float32"
    assert (out / "user_map.parquet").is_file() and (out / "item_map.parquet").is_file()
    assert "opset 18" in (out / "README.txt").read_text()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"pairs": np.array([[0, 3], [2, 5]], np.int64)})[0]
    assert scores.shape == (2,) and np.isfinite(scores).all()

    # nearest-neighbour vectors: the README's recipe gives the model's own top items
    assert "nearest-neighbour vectors (5 floats" in printed
    assert info["retrieval_vectors"]["files"] == ["user_vectors.parquet", "item_vectors.parquet"]
    user_ids, users = read_vectors(out / "user_vectors.parquet")
    item_ids, items = read_vectors(out / "item_vectors.parquet")
    np.testing.assert_array_equal(user_ids, USER_IDS)
    np.testing.assert_array_equal(item_ids, ITEM_IDS)
    model = world.models["mf"]
    with torch.no_grad():
        full = model.score_all(torch.arange(N_USERS)).numpy()
    for u in range(N_USERS):
        top = item_ids[(users[u] @ items.T).argsort()[::-1][:5]]
        want = np.sort(full[u])[::-1][:5]
        got = full[u][np.searchsorted(ITEM_IDS, top)]
        np.testing.assert_allclose(got, want, atol=1e-6)  # the same top scores (ties aside)
    readme = (out / "README.txt").read_text()
    assert "scores[np.isin(item_ids, rated.to_numpy())] = -np.inf" in readme
    assert "top = item_ids[scores.argsort()[::-1][:10]]" in readme


def test_cli_export_says_why_a_model_has_no_vectors(
        world_lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deepfm"
    assert _cli(world_lake, "export", "--model", "deepfm", "--out", str(out)) == 0
    assert "no nearest-neighbour vectors: the deepfm model has no vectors" in \
        capsys.readouterr().out
    info = json.loads((out / "export.json").read_text())
    assert "non-linear layers" in info["retrieval_vectors"]["skipped"]
    assert not (out / "item_vectors.parquet").exists() and (out / "model.onnx").is_file()
    assert "no user_vectors / item_vectors: the deepfm model" in (out / "README.txt").read_text()


def test_cli_project_defaults_to_the_lake_report_folder(
        world_lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(world_lake, "project", "--tsne-max-items", "0", "--tracking-uri",
                f"sqlite:///{world_lake / 'mlflow' / 'mlflow.db'}") == 0
    folder = world_lake / "reports" / "item_projection" / "mf_model"
    printed = capsys.readouterr().out
    assert str(folder / "vectors.tsv") in printed and "t-SNE on 0" in printed
    assert len((folder / "vectors.tsv").read_text().splitlines()) == N_ITEMS


def test_cli_project_refuses_a_negative_tsne_size(world_lake: Path) -> None:
    with pytest.raises(ValueError, match="tsne_max_items=-5 must be >= 0"):
        _cli(world_lake, "project", "--model", "mf", "--tsne-max-items", "-5")
    assert not (world_lake / "reports" / "item_projection" / "mf_model").exists()


def test_export_and_project_never_replace_a_folder_they_did_not_write(
        world_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine too")
    for command in ("export", "project"):
        with pytest.raises(ValueError, match=f"{mine} exists and is not an earlier "
                                             ".*name a new or empty folder"):
            _cli(world_lake, command, "--model", "mf", "--out", str(mine))
        with pytest.raises(ValueError, match=f"{a_file} exists and is not a folder"):
            _cli(world_lake, command, "--model", "mf", "--out", str(a_file))
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    assert a_file.read_text() == "mine too"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders

    monkeypatch.chdir(mine)
    with pytest.raises(ValueError, match="the working folder or one above it cannot be replaced"):
        _cli(world_lake, "export", "--model", "mf", "--out", ".")
    with pytest.raises(ValueError, match="the working folder or one above it"):
        _cli(world_lake, "export", "--model", "mf", "--out", str(tmp_path))
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]

    out = tmp_path / "exported"  # an earlier export, and an empty folder, are replaced
    assert _cli(world_lake, "export", "--model", "mf", "--out", str(out)) == 0
    assert _cli(world_lake, "export", "--model", "bias", "--out", str(out)) == 0
    assert json.loads((out / "export.json").read_text())["model"] == "bias_model"
    (tmp_path / "empty").mkdir()
    assert _cli(world_lake, "project", "--model", "mf", "--tsne-max-items", "0", "--out",
                str(tmp_path / "empty")) == 0
    assert _cli(world_lake, "project", "--model", "mf", "--tsne-max-items", "0", "--out",
                str(tmp_path / "empty")) == 0
    assert (tmp_path / "empty" / "projection.parquet").is_file()
