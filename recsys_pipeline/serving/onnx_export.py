"""Export a rating model's pair scorer to ONNX and check it against torch with onnxruntime.

The graph is ``models.export.PairScorer``: input ``pairs`` int64 ``[batch, 2]`` (columns
``user_idx, item_idx``) → output ``scores`` float32 ``[batch]``, batch dimension dynamic. The
default exporter is torch's ``torch.export``-based one (``dynamo=True``, needs ``onnxscript``)
at opset 18; ``dynamo=False`` selects the legacy TorchScript exporter (deprecated by torch,
kept as a fallback), at the same opset. Side features (DeepFM's genres / years / tags) are
buffers, so they become graph constants. ``onnx``, ``onnxscript`` and ``onnxruntime`` are
imported only here, inside the functions.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from recsys_pipeline.data.lake import write_atomic
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.export import PairScorer
from recsys_pipeline.training.seed import torch_generator

logger = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "pairs"
OUTPUT_NAME = "scores"
ATOL = 1e-4


def _example_pairs(model: RatingModel) -> torch.Tensor:
    # two rows: a batch of 1 could be specialised into the graph as a constant size
    return torch.tensor([[0, 0], [model.n_users - 1, model.n_items - 1]], dtype=torch.long)


def onnx_bytes(model: RatingModel, opset: int = OPSET, dynamo: bool = True) -> bytes:
    """The serialized ONNX model of ``PairScorer(model)`` (CPU copy; ``model`` untouched).

    Args:
        model: Any rating model.
        opset: ONNX opset version.
        dynamo: torch's ``torch.export``-based exporter (True) or the legacy one.

    Returns:
        The ``.onnx`` file content.
    """
    scorer = PairScorer(model)
    example = (_example_pairs(model),)
    # the exporter logs a warning per torchvision op it cannot register (torchvision is not a
    # dependency) and warns about its own deprecations; neither concerns these graphs
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        return _export(scorer, example, opset, dynamo)
    finally:
        exporter_log.setLevel(level)


def _export(scorer: PairScorer, example: tuple[torch.Tensor], opset: int, dynamo: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                scorer, example, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False)
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        torch.onnx.export(
            scorer, example, buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        return buf.getvalue()


def export_onnx(
    model: RatingModel, path: str | os.PathLike[str], opset: int = OPSET, dynamo: bool = True
) -> Path:
    """Write the model's pair scorer to ``path`` as ONNX, atomically (see :func:`onnx_bytes`).

    Returns:
        The path written.
    """
    data = onnx_bytes(model, opset, dynamo)
    return write_atomic(path, lambda p: p.write_bytes(data))


def random_pairs(model: RatingModel, n: int = 1024, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random ``(user_idx, item_idx)`` rows, always including both corners."""
    gen = torch_generator(seed)
    pairs = torch.stack([torch.randint(model.n_users, (n,), generator=gen),
                         torch.randint(model.n_items, (n,), generator=gen)], dim=1)
    return torch.cat([_example_pairs(model), pairs])  # [n + 2, 2]


def onnx_max_abs_diff(
    model: RatingModel, onnx_model: str | os.PathLike[str] | bytes,
    pairs: torch.Tensor | None = None,
) -> float:
    """``max |onnxruntime(pairs) − torch(pairs)|`` on a batch of pairs.

    Args:
        model: The torch model that was exported.
        onnx_model: The ``.onnx`` path or bytes.
        pairs: ``[B, 2]`` int64 rows; default :func:`random_pairs`.

    Returns:
        The largest absolute difference of the two scorers' outputs.
    """
    import onnxruntime as ort

    pairs = random_pairs(model) if pairs is None else pairs.long().cpu()
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: pairs.numpy()})[0]
    with torch.no_grad():
        want = PairScorer(model)(pairs).numpy()
    if got.shape != want.shape:
        raise ValueError(f"ONNX output shape {got.shape} != torch's {want.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def export_and_verify(
    model: RatingModel, path: str | os.PathLike[str], opset: int = OPSET, dynamo: bool = True,
    atol: float = ATOL,
) -> float:
    """Export to ``path`` and check onnxruntime against torch on random pairs.

    Returns:
        The max absolute difference.

    Raises:
        ValueError: The difference exceeds ``atol`` (the file is removed again).
    """
    out = export_onnx(model, path, opset, dynamo)
    diff = onnx_max_abs_diff(model, out)
    if not diff <= atol:
        out.unlink(missing_ok=True)
        raise ValueError(f"{out}: ONNX scores differ from torch by {diff:.3g} > atol={atol}")
    logger.info("exported %s to %s (opset %d, max |diff| %.2g)", type(model).__name__, out,
                opset, diff)
    return diff
