"""Evaluate stage: compare the trained models from their MLflow runs.

``reports/model_comparison`` reads back the latest finished run of each model family trained
on the current train split (matched by its SHA-256 tag), so it compares models on the same
data even when they were trained in different Dagster runs.
"""

import dagster as dg
import pyarrow as pa

from recsys_pipeline import plots
from recsys_pipeline.assets.prepare import split_key
from recsys_pipeline.assets.train import model_assets, split_hashes
from recsys_pipeline.evaluation.selection import leaderboard_table
from recsys_pipeline.metadata import markdown_table, png_markdown
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import MlflowResource, leaderboard_rows

GROUP = "evaluate"
SHOWN = ("rank", "model", "test_rmse", "test_mae", "test_fcp", "test_precision_at_10",
         "test_recall_at_10", "test_ndcg_at_10", "test_map_at_10", "test_hit_rate_at_10",
         "test_mrr_at_10", "test_coverage_at_10", "train_seconds")


def _leaderboard_metadata(table: pa.Table, lake: LakeResource) -> dict[str, object]:
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k in SHOWN}
            for r in table.to_pylist()]
    rated = [r for r in rows if r.get("test_rmse") is not None]
    meta: dict[str, object] = {"dagster/row_count": table.num_rows,
                               "leaderboard": dg.MetadataValue.md(markdown_table(rows))}
    if rated:
        png = plots.bar_chart([r["model"] for r in rated], [r["test_rmse"] for r in rated],
                              "Test RMSE (lower is better)", "model", "RMSE",
                              path=lake.path("reports", "model_comparison_rmse.png"))
        meta["test_rmse_chart"] = png_markdown(png, "test RMSE per model")
    return meta


@dg.asset(key_prefix="reports", group_name=GROUP, kinds={"mlflow", "parquet"},
          deps=[*model_assets, split_key("train")])
def model_comparison(context: dg.AssetExecutionContext, mlflow: MlflowResource,
                     lake: LakeResource) -> pa.Table:
    """Leaderboard of the latest MLflow run per model family on the current data: test RMSE
    first, ranking metrics beside it."""
    train_sha256 = split_hashes(lake)["train"]
    table = leaderboard_table(leaderboard_rows(mlflow, train_sha256))
    context.add_output_metadata({**_leaderboard_metadata(table, lake),
                                 "train_sha256": train_sha256,
                                 "mlflow_ui": mlflow.ui_command()})
    return table


evaluate_assets = [model_comparison]
