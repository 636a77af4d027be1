"""ONNX export of every rating model family: onnxruntime agrees with torch within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_pipeline.models.export import PairScorer
from recsys_pipeline.serving.onnx_export import (
    OPSET,
    export_and_verify,
    export_onnx,
    onnx_bytes,
    onnx_max_abs_diff,
)
from recsys_pipeline_tests.serving.planted import N_ITEMS, N_USERS, World

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FAMILIES = ["bias", "popularity", "mf", "mlp", "neumf", "deepfm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_matches_torch(world: World, family: str, tmp_path: Path) -> None:
    model = world.models[family]
    path = tmp_path / f"{family}.onnx"
    diff = export_and_verify(model, path)
    assert diff < 1e-4
    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    # the batch dimension is dynamic: one pair and every pair of the catalogue both run
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    uu, ii = torch.meshgrid(torch.arange(N_USERS), torch.arange(N_ITEMS), indexing="ij")
    grid = torch.stack([uu.flatten(), ii.flatten()], 1)
    for pairs in (grid[:1], grid):
        got = session.run(["scores"], {"pairs": pairs.numpy()})[0]
        with torch.no_grad():
            want = model.score(pairs[:, 0], pairs[:, 1]).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_deepfm_side_features_are_in_the_graph(world: World) -> None:
    """DeepFM's genre and year buffers become graph constants, and the graph still agrees."""
    model = world.models["deepfm"]
    assert model.genres is not None and model.year_embedding is not None
    data = onnx_bytes(model)
    assert onnx_max_abs_diff(model, data) < 1e-4


def test_legacy_exporter_also_agrees(world: World, tmp_path: Path) -> None:
    path = export_onnx(world.models["mf"], tmp_path / "mf.onnx", dynamo=False)
    assert onnx_max_abs_diff(world.models["mf"], path) < 1e-4


def test_a_wrong_graph_is_caught(world: World, tmp_path: Path) -> None:
    """The check really compares: an MF graph checked against the bias model fails."""
    path = export_onnx(world.models["mf"], tmp_path / "mf.onnx", dynamo=False)
    assert onnx_max_abs_diff(world.models["bias"], path) > 1e-2
    with torch.no_grad():
        assert PairScorer(world.models["mf"])(torch.tensor([[0, 0]])).shape == (1,)
