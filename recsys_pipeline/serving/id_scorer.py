"""Score pairs of ORIGINAL MovieLens ids: a model plus its id maps, saved and loaded together.

:class:`IdScorer` is what a serving wrapper (an MLflow pyfunc, a web handler) holds: its
``predict(user_ids, item_ids)`` maps ids with ``IdMaps`` (an unknown id raises ValueError
naming it) and scores with the model. ``save(dir)`` writes ``dir/model/`` (state_dict + JSON,
``models.base.save_model``) and ``dir/id_maps/`` (two Parquet files); nothing is pickled, so an
MLflow ``PythonModel`` needs only ``load_context: self.scorer = IdScorer.load(path)`` and
``predict: return self.scorer.predict(df.user_id.values, df.item_id.values)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps, load_id_maps, save_id_maps
from recsys_pipeline.models.base import RatingModel, load_model
from recsys_pipeline.serving.tables import SCORE, check_model_maps
from recsys_pipeline.training.device import model_device

MODEL_DIR = "model"
MAPS_DIR = "id_maps"


def _ids(values: np.ndarray | list[int] | pa.Array | pa.ChunkedArray, column: str) -> np.ndarray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if values.null_count:
            raise ValueError(f"column {column!r} has {values.null_count} null id(s)")
        values = values.to_numpy(zero_copy_only=False)
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{column} must be 1-D, got shape {array.shape}")
    if array.size and array.dtype.kind == "f":  # e.g. ids that went through a float column
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            bad = array[~(np.isfinite(array) & (array == np.round(array)))][:5].tolist()
            raise ValueError(f"{column} must hold integer ids, got {bad}")
        array = array.astype(np.int64)
    elif array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{column} must hold integer ids, got dtype {array.dtype}")
    return array.astype(np.int64)


class IdScorer:
    """``predict(user_ids, item_ids) -> scores`` for original ids.

    Args:
        model: A trained rating model (any family; eval mode is set).
        maps: The id maps it was trained with.
        batch_size: Pairs per forward pass.
    """

    def __init__(self, model: RatingModel, maps: IdMaps, batch_size: int = 65536) -> None:
        check_model_maps(model, maps)
        self.model = model.eval()
        self.maps = maps
        self.batch_size = batch_size

    @torch.no_grad()
    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Score each ``(user_ids[b], item_ids[b])`` pair.

        Args:
            user_ids: Original ``userId`` values (integers).  # [B]
            item_ids: Original ``movieId`` values.  # [B]

        Returns:
            float32 scores (predicted ratings for rating models).  # [B]

        Raises:
            ValueError: Lengths differ, non-integer ids, or an id the maps do not know
                (named in the message).
        """
        users, items = _ids(user_ids, S.USER_ID), _ids(item_ids, S.ITEM_ID)
        if users.shape != items.shape:
            raise ValueError(f"{users.shape[0]} user ids but {items.shape[0]} item ids")
        u = torch.from_numpy(self.maps.to_user_idx(users).astype(np.int64))
        i = torch.from_numpy(self.maps.to_item_idx(items).astype(np.int64))
        device = model_device(self.model)
        parts = [self.model.score(u[s : s + self.batch_size].to(device),
                                  i[s : s + self.batch_size].to(device)).float().cpu()
                 for s in range(0, len(u), self.batch_size)]
        return torch.cat(parts).numpy() if parts else np.empty(0, dtype=np.float32)

    def predict_table(self, table: pa.Table) -> pa.Table:
        """``table`` (with ``user_id`` and ``item_id`` columns) plus a ``score`` column."""
        missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in table.column_names]
        if missing:
            raise ValueError(f"table lacks column(s) {missing}; has {table.column_names}")
        scores = self.predict(table.column(S.USER_ID), table.column(S.ITEM_ID))
        return table.append_column(SCORE, pa.array(scores, pa.float32()))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/model/`` and ``directory/id_maps/`` (each file atomically)."""
        directory = Path(directory)
        self.model.save(directory / MODEL_DIR)
        save_id_maps(self.maps, directory / MAPS_DIR)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str],
             map_location: str | torch.device = "cpu") -> IdScorer:
        """Load what :meth:`save` wrote (FileNotFoundError / ValueError naming the file)."""
        directory = Path(directory)
        model = load_model(directory / MODEL_DIR, map_location)
        return cls(model, load_id_maps(directory / MAPS_DIR))
