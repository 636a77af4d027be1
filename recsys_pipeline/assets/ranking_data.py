"""Prepare stage, ranking side: the strong-generalization matrices of the fold-in models.

``prepared/strong_generalization_matrix`` (CSR ``.npz`` per split, ``matrices_io_manager``)
and ``prepared/strong_generalization_items`` (Parquet: column -> ``item_idx``, ``item_id``,
title) come from ``prepared/encoded_ratings`` by
``training.ranking_experiment.strong_generalization_data``.
"""

import dagster as dg
import numpy as np
import pyarrow as pa

from recsys_pipeline.assets.prepare import GROUP, PREFIX
from recsys_pipeline.metadata import markdown_table, table_metadata
from recsys_pipeline.training.ranking_experiment import StrongGenSpec, strong_generalization_data

MATRIX_KEY = dg.AssetKey([PREFIX, "strong_generalization_matrix"])
ITEMS_KEY = dg.AssetKey([PREFIX, "strong_generalization_items"])


class StrongGeneralizationMatrixConfig(dg.Config):
    """Strong-generalization protocol (Liang et al. 2018): held-out users folded in at test."""

    positive_threshold: float = StrongGenSpec.positive_threshold  # ratings >= this are positives
    min_item_users: int = StrongGenSpec.min_item_users  # keep items with >= this many positives
    min_user_positives: int = StrongGenSpec.min_user_positives  # keep users with >= this many
    n_valid_users: int = StrongGenSpec.n_valid_users  # validation users, never trained on
    n_test_users: int = StrongGenSpec.n_test_users  # test users, never trained on
    fold_in_fraction: float = StrongGenSpec.fold_in_fraction  # share of a held-out user's input
    seed: int = StrongGenSpec.seed  # draws the held-out users and their fold-in rows

    def to_core(self) -> StrongGenSpec:
        return StrongGenSpec(self.positive_threshold, self.min_item_users,
                             self.min_user_positives, self.n_valid_users, self.n_test_users,
                             self.fold_in_fraction, self.seed)


@dg.multi_asset(
    group_name=GROUP,
    ins={"encoded": dg.AssetIn(key=[PREFIX, "encoded_ratings"]),
         "user_map": dg.AssetIn(key=[PREFIX, "user_map"]),
         "item_map": dg.AssetIn(key=[PREFIX, "item_map"])},
    outs={"strong_generalization_matrix": dg.AssetOut(
              key=MATRIX_KEY, io_manager_key="matrices_io_manager", kinds={"scipy", "numpy"},
              description="Strong-generalization positives: train users' rows, held-out "
                          "users' fold-in and evaluation rows (CSR per split)."),
          "strong_generalization_items": dg.AssetOut(
              key=ITEMS_KEY, kinds={"parquet"},
              description="Matrix column -> item_idx, item_id, title of the kept items.")})
def strong_generalization_matrix(context: dg.AssetExecutionContext,
                                 config: StrongGeneralizationMatrixConfig, encoded: pa.Table,
                                 user_map: pa.Table, item_map: pa.Table):
    """Positives (rating >= 4) of items with >= 5 users; 100 + 100 users held out entirely,
    80 % of each one's positives folded in, the rest ranked."""
    data = strong_generalization_data(encoded, user_map.num_rows, config.to_core())
    items = item_map.take(pa.array(data.columns)).add_column(
        0, "column", pa.array(np.arange(data.columns.size, dtype=np.int32)))
    context.log.info(f"strong generalization: {data.report}")
    rows = [{"split": n, "rows": m.nnz, "users": int((m.getnnz(1) > 0).sum())}
            for n, m in data.matrices.binary.items()]
    return (
        dg.Output(data.matrices, metadata={
            "shape": str([user_map.num_rows, int(data.columns.size)]),
            "matrices": dg.MetadataValue.md(markdown_table(rows)),
            "protocol": "positives = rating >= threshold; items >= min_item_users; held-out "
                        "users never in train; fold-in rows are model input, the rest ranked",
            **{k: int(v) for k, v in data.report.items()}}),
        dg.Output(items, metadata=table_metadata(items)),
    )


ranking_data_assets = [strong_generalization_matrix]
