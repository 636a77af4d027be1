"""Export artifacts of a trained model in the active MLflow run: ONNX graph + original-id pyfunc.

Called by ``tracking.train_and_track`` (rating models) and
``tracking_ranking.train_and_track_ranking`` (ranking models) right after the model is logged.
Both artifacts are plain MLflow model folders logged as run artifacts (``mlflow.<flavor>.
save_model`` into a temp folder, then ``log_artifacts``), so they add no second logged model
to the run: ``runs:/<run>/model`` stays the registered one.

* ``onnx/`` (``mlflow.onnx`` flavor): the scoring function, checked with onnxruntime against
  torch on a batch before it is logged (max abs difference < ``ATOL``: metric
  ``onnx_max_abs_diff``, tag ``export.onnx_opset``; ``onnx/export.json`` names opset, inputs
  and outputs). Rating models and two-tower:
  ``models.export.PairScorer``, input ``pairs`` int64 ``[batch, 2]`` (``user_idx, item_idx``)
  → ``scores`` float32 ``[batch]``. Fold-in models (autoencoder, Mult-VAE, EASE): input
  ``rows`` float32 ``[batch, n_items]`` (a user's interaction row over the model's item
  columns) → ``scores`` float32 ``[batch, n_items]``, which also folds in unseen users.
* ``original_ids_model/`` (pyfunc, "models from code": no pickle): ``predict`` takes a pandas
  DataFrame with ``user_id, item_id`` (original MovieLens ids) and returns one float32 score
  per row (the predicted rating for rating models); **a pair with an id the model does not
  know scores NaN** (batch scoring of mixed rows must not fail as a whole). The folder holds
  ``artifacts/model/`` (``config.json`` + ``state_dict.pt``), ``artifacts/users.parquet`` /
  ``items.parquet`` (original id of each model index, in index order) and the loader script,
  which imports this package: serve it where recsys-pipeline is installed, e.g.
  ``mlflow models predict -m runs:/<run>/original_ids_model -i in.csv -t csv
  --env-manager local``.
* Sequence models (GRU4Rec, SASRec, co-occurrence) score the next item of an item sequence
  and have no user index, so neither a ``user_id, item_id`` scorer nor a pair graph describes
  them (no ONNX: tag ``export.onnx_skipped``). Their ``original_ids_model/`` is a next-item
  pyfunc (:class:`NextItemsModel`, ``serving.next_items``): ``predict`` takes a DataFrame of
  sessions, one row per item (``session_id`` or ``user_id``, ``item_id``, optional
  ``timestamp``; rows in order within a session unless times are given) and returns each
  session's top-k next items (``params={"k": 10}``) as rows ``<session column>, rank,
  item_id, score``, the session's own items left out. The folder holds ``artifacts/model/``,
  ``artifacts/items.parquet`` (original id of each token ``1..n_vocab``) and
  ``artifacts/next_items.json`` (the input width). Without the token ids nothing is exported
  (tag ``export.skipped``).

``onnx``, ``onnxscript`` and ``onnxruntime`` are needed only when ``log_onnx`` is on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import find_positions
from recsys_pipeline.models.base import FAMILIES, load_saved, save_model
from recsys_pipeline.models.ranking_base import RANKING_FAMILIES, FoldInModel, SequenceModel
from recsys_pipeline.serving import onnx_export
from recsys_pipeline.serving.next_items import WIDTH_FILE, next_items

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
PYFUNC_DIR = "original_ids_model"
MODEL_DIR, USERS_FILE, ITEMS_FILE = "model", "users.parquet", "items.parquet"
# where the model folder lands inside the run (serving.lake_models.RUN_MODEL_DIR reads it)
PYFUNC_MODEL_PATH = f"{PYFUNC_DIR}/artifacts/{MODEL_DIR}"
ROWS_INPUT = "rows"
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
ATOL = onnx_export.ATOL
ONNX_MAX_BYTES = 2**31 - 1  # protobuf's limit on one serialized ONNX model, weights inline
SKIP_REASON = ("sequence model: scores the next item of a sequence, has no user index, so no "
               "user_id/item_id scorer or pair graph is exported")
SESSION_ID, TIMESTAMP, RANK, SCORE = "session_id", "timestamp", "rank", "score"
DEFAULT_K = 10


def _loader(cls: str) -> str:
    """The "models from code" script that builds the pyfunc ``cls`` of this module."""
    return ("from mlflow.models import set_model\n\n"
            f"from recsys_pipeline.tracking_export import {cls}\n\n"
            f"set_model({cls}())\n")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`log_exports` logged and what it cost.

    Attributes:
        onnx_max_abs_diff: ``max |onnxruntime − torch|`` on the check batch (None: no ONNX).
        onnx_seconds: Export + check + logging time of the ONNX model.
        pyfunc_seconds: Logging time of the original-id pyfunc.
        skipped: Why nothing was exported ("" when something was).
    """

    onnx_max_abs_diff: float | None
    onnx_seconds: float
    pyfunc_seconds: float
    skipped: str = ""


class _RowScorer(nn.Module):
    """``forward(rows) = model._score_dense(rows)`` of a fold-in model, CPU copy, eval mode."""

    def __init__(self, model: FoldInModel) -> None:
        super().__init__()
        self.model = type(model).from_init_args(model.n_users, model.n_items, model.config,
                                                model.init_args())
        self.model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        self.model.eval()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Scores over the item columns.  # [B, n_items] -> [B, n_items]"""
        return self.model._score_dense(rows).float()

    def train(self, mode: bool = True) -> _RowScorer:
        return super().train(False)  # deterministic graph: no dropout, the VAE's mean


def _row_example(model: FoldInModel, n: int = 64) -> torch.Tensor:
    """Training rows of the first ``n`` users plus one empty row.  # [n + 1, n_items]"""
    users = torch.arange(min(n, model.n_users))
    rows = model.history().dense_rows(users.to(model.history_indptr.device)).float().cpu()
    return torch.cat([rows, torch.zeros(1, model.n_items)])


def onnx_rows_bytes(model: FoldInModel, opset: int = onnx_export.OPSET) -> bytes:
    """The ONNX graph of a fold-in model's row scorer (batch dimension dynamic)."""
    import warnings

    scorer = _RowScorer(model)
    example = (_row_example(model, 2),)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            program = torch.onnx.export(
                scorer, example, dynamo=True, opset_version=opset, input_names=[ROWS_INPUT],
                output_names=[onnx_export.OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    finally:
        exporter_log.setLevel(level)
    return program.model_proto.SerializeToString()


def onnx_rows_max_abs_diff(model: FoldInModel, data: bytes) -> float:
    """``max |onnxruntime(rows) − torch(rows)|`` on :func:`_row_example` rows."""
    import onnxruntime as ort

    rows = _row_example(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run([onnx_export.OUTPUT_NAME], {ROWS_INPUT: rows.numpy()})[0]
    with torch.no_grad():
        want = _RowScorer(model)(rows).numpy()
    if got.shape != want.shape:
        raise ValueError(f"ONNX output shape {got.shape} != torch's {want.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def onnx_export_checked(model: nn.Module, atol: float = ATOL) -> tuple[bytes, float, dict]:
    """Export ``model``'s scoring function to ONNX and check it with onnxruntime.

    Args:
        model: A rating model, two-tower or fold-in model (not a sequence model).
        atol: Largest allowed ``max |onnxruntime − torch|`` on the check batch.

    Returns:
        ``(onnx bytes, max abs difference, description)``; the description names the opset,
        inputs and outputs.

    Raises:
        ValueError: A sequence model, weights too large for one ONNX file
            (:func:`onnx_size_problem`), or the difference exceeds ``atol``.
    """
    if isinstance(model, SequenceModel):
        raise ValueError(f"{type(model).__name__}: {SKIP_REASON}")
    if (too_large := onnx_size_problem(model)) is not None:
        raise ValueError(f"{type(model).__name__}: {too_large}")
    if isinstance(model, FoldInModel):
        data = onnx_rows_bytes(model)
        diff = onnx_rows_max_abs_diff(model, data)
        io = {"inputs": {ROWS_INPUT: ["float32", ["batch", model.n_items]]},
              "outputs": {onnx_export.OUTPUT_NAME: ["float32", ["batch", model.n_items]]}}
    else:
        data = onnx_export.onnx_bytes(model)  # type: ignore[arg-type]
        diff = onnx_export.onnx_max_abs_diff(model, data)  # type: ignore[arg-type]
        io = {"inputs": {onnx_export.INPUT_NAME: ["int64", ["batch", 2]]},
              "outputs": {onnx_export.OUTPUT_NAME: ["float32", ["batch"]]}}
    if not diff < atol:
        raise ValueError(f"{type(model).__name__}: ONNX scores differ from torch by "
                         f"{diff:.3g} >= {atol}")
    info = {"family": getattr(model, "family", ""), "opset": onnx_export.OPSET,
            "max_abs_diff_vs_torch": diff, "atol": atol, **io}
    return data, diff, info


def onnx_size_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot be one ONNX file, or None: its scoring weights (parameters and
    buffers; a fold-in model's stored training rows are not exported) exceed protobuf's
    2 GiB, e.g. EASE's ``n_items²`` matrix beyond about 23,000 items (onnxruntime then fails
    with ``narrowing_error``)."""
    size = sum(t.numel() * t.element_size() for name, t in (
        *model.named_parameters(), *model.named_buffers())
        if not name.rsplit(".", 1)[-1].startswith("history_"))
    if size <= ONNX_MAX_BYTES:
        return None
    return f"weights of {size / 2**30:.1f} GiB exceed the 2 GiB of one ONNX file"


def log_onnx(model: nn.Module, atol: float = ATOL) -> float:
    """Log the checked ONNX export under ``onnx/`` (``mlflow.onnx`` model folder).

    Returns:
        The max abs difference onnxruntime vs torch.
    """
    import mlflow.onnx
    import onnx

    data, diff, info = onnx_export_checked(model, atol)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ONNX_DIR
        mlflow.onnx.save_model(onnx.load_from_string(data), str(folder),
                               pip_requirements=_requirements("onnx", "onnxruntime"))
        (folder / "export.json").write_text(json.dumps(info, indent=2))
        mlflow.log_artifacts(str(folder), ONNX_DIR)
    mlflow.log_params({"export.onnx_max_abs_diff": f"{diff:.3g}"})
    mlflow.log_metric("onnx_max_abs_diff", diff)
    mlflow.set_tags({"export.onnx_opset": str(onnx_export.OPSET)})
    return diff


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the installed packages (MLflow's inference would re-import the
    model in a subprocess, seconds per model)."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in ("mlflow", *packages)]


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    saved = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = saved


def _id_table(ids: np.ndarray, column: str) -> pa.Table:
    return pa.table({column: pa.array(np.asarray(ids, dtype=np.int64))})


def _log_pyfunc(cls: str, root: Path, files: tuple[str, ...], signature: Any,
                example: pd.DataFrame, params: dict[str, Any] | None = None) -> None:
    """Save the pyfunc ``cls`` over the artifact ``files`` written in ``root`` and log it as
    ``original_ids_model/`` of the active run."""
    (root / "loader.py").write_text(_loader(cls))
    folder = root / PYFUNC_DIR
    input_example = (example, params) if params else example
    with _no_progress_bars():  # save_model "downloads" each local artifact with a bar
        mlflow.pyfunc.save_model(str(folder), python_model=str(root / "loader.py"),
                                 artifacts={k: str(root / k) for k in files},
                                 signature=signature, input_example=input_example,
                                 pip_requirements=_requirements("torch", "pyarrow", "pandas"))
    mlflow.log_artifacts(str(folder), PYFUNC_DIR)


def log_original_ids_model(model: nn.Module, user_ids: np.ndarray, item_ids: np.ndarray) -> None:
    """Log the original-id pyfunc under ``original_ids_model/`` (see the module doc).

    Args:
        model: A rating, two-tower or fold-in model.
        user_ids: Original ``userId`` of each ``user_idx``.  # [n_users]
        item_ids: Original ``movieId`` of each of the model's item indices.  # [n_items]
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if (len(user_ids), len(item_ids)) != (model.n_users, model.n_items):
        raise ValueError(f"id maps hold {len(user_ids)} users x {len(item_ids)} items, the "
                         f"model {model.n_users} x {model.n_items}")
    signature = ModelSignature(inputs=Schema([ColSpec("long", S.USER_ID),
                                              ColSpec("long", S.ITEM_ID)]),
                               outputs=Schema([ColSpec("float", SCORE)]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_model(model, root / MODEL_DIR)  # type: ignore[arg-type]
        pq.write_table(_id_table(user_ids, S.USER_ID), root / USERS_FILE)
        pq.write_table(_id_table(item_ids, S.ITEM_ID), root / ITEMS_FILE)
        _log_pyfunc("OriginalIdsModel", root, (MODEL_DIR, USERS_FILE, ITEMS_FILE), signature,
                    pd.DataFrame({S.USER_ID: np.asarray(user_ids[:2], np.int64),
                                  S.ITEM_ID: np.asarray(item_ids[:2], np.int64)}))


def log_next_items_model(model: SequenceModel, item_ids: np.ndarray, width: int) -> None:
    """Log a sequence model's next-item pyfunc under ``original_ids_model/`` (module doc).

    Args:
        model: A trained sequence model.
        item_ids: Original ``movieId`` of each token ``1..n_vocab``.  # [n_vocab]
        width: Items of input per session (the training sequences' width).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    if len(item_ids) != model.n_vocab:
        raise ValueError(f"{len(item_ids)} token item ids for a model of {model.n_vocab} "
                         "tokens")
    if width < 1:
        raise ValueError(f"width={width} must be >= 1")
    # no input schema: MLflow's has one type per column, and sessions come keyed by
    # session_id or user_id with integer or datetime times; predict checks its input itself
    signature = ModelSignature(inputs=None,
                               params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_model(model, root / MODEL_DIR)
        pq.write_table(_id_table(item_ids, S.ITEM_ID), root / ITEMS_FILE)
        (root / WIDTH_FILE).write_text(json.dumps({"width": int(width)}))
        example = pd.DataFrame({SESSION_ID: np.zeros(min(3, len(item_ids)), np.int64),
                                S.ITEM_ID: np.asarray(item_ids[:3], np.int64)})
        _log_pyfunc("NextItemsModel", root, (MODEL_DIR, ITEMS_FILE, WIDTH_FILE),
                    signature, example, {"k": DEFAULT_K})


def log_exports(model: nn.Module, user_ids: np.ndarray | None, item_ids: np.ndarray | None,
                onnx: bool = True, log: Any = None,
                pyfunc_model: nn.Module | None = None,
                sequence_width: int | None = None) -> ExportReport:
    """Log the ONNX export (when ``onnx``) and the original-id pyfunc in the active run.

    A sequence model gets no ONNX export (tag ``export.onnx_skipped``) and its next-item
    pyfunc when ``item_ids`` (one per token) and ``sequence_width`` are given, else nothing
    (tag ``export.skipped``). Other models get no pyfunc when no id maps are given.
    ``pyfunc_model`` (default ``model``) is what the pyfunc scores with, e.g. a fold-in model
    holding the rows ``recommend`` serves from. Timings go to the metrics
    ``export_onnx_seconds`` / ``export_pyfunc_seconds``.
    """
    sequence = isinstance(model, SequenceModel)
    if sequence and (item_ids is None or sequence_width is None):
        mlflow.set_tags({"export.skipped": SKIP_REASON})
        return ExportReport(None, 0.0, 0.0, SKIP_REASON)
    skipped = None
    if onnx and sequence:
        skipped = SKIP_REASON
    elif onnx:
        missing = _missing_onnx_packages()
        skipped = (f"not installed: {', '.join(missing)}" if missing
                   else onnx_size_problem(model))
    if skipped:
        mlflow.set_tags({"export.onnx_skipped": skipped})
        if log is not None:
            log.info(f"export: no ONNX model logged ({skipped})")
    start = time.perf_counter()
    diff = log_onnx(model) if onnx and not skipped else None
    mid = time.perf_counter()
    if sequence:
        log_next_items_model(model, item_ids, int(sequence_width))  # type: ignore[arg-type]
    elif user_ids is not None and item_ids is not None:
        log_original_ids_model(model if pyfunc_model is None else pyfunc_model, user_ids,
                               item_ids)
    end = time.perf_counter()
    report = ExportReport(diff, mid - start, end - mid)
    mlflow.log_metrics({"export_onnx_seconds": report.onnx_seconds,
                        "export_pyfunc_seconds": report.pyfunc_seconds})
    if log is not None:
        shown = "off" if diff is None else f"max |diff| {diff:.2g}"
        kind = "next-item" if sequence else "original-id"
        log.info(f"export: ONNX {shown} ({report.onnx_seconds:.1f} s), {kind} pyfunc "
                 f"({report.pyfunc_seconds:.1f} s)")
    return report


def _missing_onnx_packages() -> list[str]:
    from importlib.util import find_spec

    return [p for p in ("onnx", "onnxscript", "onnxruntime") if find_spec(p) is None]


def lake_ids(lake: str | os.PathLike[str], model: nn.Module
             ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Original user and item ids of a ranking model's indices, from the lake's tables.

    Users: ``prepared/user_map``. Items: ``prepared/strong_generalization_items`` (matrix
    column order) for fold-in models, else ``prepared/item_map``. ``(None, None)`` for a
    sequence model or when a table is missing (then no original-id pyfunc is logged).
    """
    prepared = Path(lake) / "prepared"
    items_file = ("strong_generalization_items.parquet" if isinstance(model, FoldInModel)
                  else "item_map.parquet")
    paths = (prepared / "user_map.parquet", prepared / items_file)
    if isinstance(model, SequenceModel) or not all(p.is_file() for p in paths):
        return None, None
    users = pq.read_table(paths[0]).sort_by(S.USER_IDX).column(S.USER_ID).to_numpy()
    items = pq.read_table(paths[1])
    order = "column" if "column" in items.column_names else S.ITEM_IDX
    return users, items.sort_by(order).column(S.ITEM_ID).to_numpy()


class OriginalIdsModel(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame of original ``user_id, item_id`` → float32 scores (NaN: unknown id)."""

    def load_context(self, context: Any) -> None:
        """Load the model folder (``weights_only`` torch.load) and the id lists."""
        self.model = load_saved(context.artifacts[MODEL_DIR], "cpu",
                                (*FAMILIES, *RANKING_FAMILIES), nn.Module)
        self.user_ids = pq.read_table(context.artifacts[USERS_FILE]).column(
            S.USER_ID).to_numpy()
        self.item_ids = pq.read_table(context.artifacts[ITEMS_FILE]).column(
            S.ITEM_ID).to_numpy()

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None
                ) -> np.ndarray:
        """One score per row of ``model_input`` (columns ``user_id``, ``item_id``)."""
        missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks column(s) {missing}; has {list(model_input.columns)}")
        users = find_positions(self.user_ids, model_input[S.USER_ID].to_numpy(np.int64))
        items = find_positions(self.item_ids, model_input[S.ITEM_ID].to_numpy(np.int64))
        out = np.full(len(model_input), np.nan, dtype=np.float32)
        known = (users >= 0) & (items >= 0)
        with torch.no_grad():
            if known.any():
                out[known] = self.model.score(torch.from_numpy(users[known]),
                                              torch.from_numpy(items[known])).float().numpy()
        return out


class NextItemsModel(mlflow.pyfunc.PythonModel):
    """pyfunc: sessions in original ids → each session's top-k next items (module doc)."""

    def load_context(self, context: Any) -> None:
        """Load the model folder (``weights_only`` torch.load), token ids and width."""
        self.model = load_saved(context.artifacts[MODEL_DIR], "cpu", RANKING_FAMILIES,
                                SequenceModel)
        self.item_ids = pq.read_table(context.artifacts[ITEMS_FILE]).column(
            S.ITEM_ID).to_numpy()
        self.width = int(json.loads(Path(context.artifacts[WIDTH_FILE]).read_text())[
            "width"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None
                ) -> pd.DataFrame:
        """Rows ``<session column>, rank, item_id, score`` (sessions ascending, best first).

        ``model_input`` holds one row per item: ``session_id`` (or ``user_id``), ``item_id``
        and optionally ``timestamp``; ``params["k"]`` is the list length (default 10).
        """
        key = next((c for c in (SESSION_ID, S.USER_ID) if c in model_input.columns), None)
        if key is None or S.ITEM_ID not in model_input.columns:
            raise ValueError(f"input needs columns {SESSION_ID} (or {S.USER_ID}) and "
                             f"{S.ITEM_ID}; has {list(model_input.columns)}")
        k = int((params or {}).get("k", DEFAULT_K))
        if model_input[key].isna().any():
            raise ValueError(f"input column {key!r} has missing values")
        codes, labels = pd.factorize(model_input[key], sort=True)
        times = (_integer_column(model_input, TIMESTAMP)
                 if TIMESTAMP in model_input.columns else None)
        lists = next_items(self.model, self.item_ids, self.width, codes, len(labels),
                           _integer_column(model_input, S.ITEM_ID), k, times)
        return pd.DataFrame({key: np.asarray(labels)[lists.session], RANK: lists.rank,
                             S.ITEM_ID: lists.item_id, SCORE: lists.score})


def _integer_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as int64: integers, whole floats, or datetimes (their epoch count);
    anything else (missing values, fractions, text) is an error naming the column."""
    values = frame[column]
    if not values.isna().any():
        if pd.api.types.is_datetime64_any_dtype(values):
            return values.astype("int64").to_numpy()
        if values.dtype.kind in "iu":
            return values.to_numpy(np.int64)
        if values.dtype.kind == "f" and bool((values == values.round()).all()) and bool(
                np.isfinite(values.to_numpy(np.float64)).all()):
            return values.to_numpy(np.int64)
    raise ValueError(f"input column {column!r} must hold integers (or datetimes for "
                     f"{TIMESTAMP!r}) without missing values; got dtype {values.dtype}")
