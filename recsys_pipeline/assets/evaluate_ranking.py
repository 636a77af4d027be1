"""Evaluate stage, ranking side: ``reports/ranking_comparison``, the ranking leaderboard.

It sits beside ``reports/model_comparison`` (the rating leaderboard) and reads back the
latest finished MLflow run of each ranking model trained on the current encoded ratings
(matched by the ``data.ranking_train_sha256`` tag). Rows are grouped by protocol; within a
protocol, best test NDCG@10 first. Metrics of different protocols are not comparable.
"""

import dagster as dg
import pyarrow as pa

from recsys_pipeline.assets.evaluate import GROUP
from recsys_pipeline.assets.train_ranking import ENCODED_FILE, ranking_model_assets
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.metadata import markdown_table
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import MlflowResource
from recsys_pipeline.tracking_ranking import ranking_rows

PROTOCOLS = {
    "strong_generalization": (
        "Strong generalization (Liang et al. 2018): positives = ratings >= 4 of items with "
        ">= 5 users (and users with >= 5 positives); the validation and test users are held "
        "out entirely (never trained on); 80 % of each held-out user's positives (random) are "
        "the model's input (fold-in), the other 20 % are ranked over all kept items with the "
        "fold-in items excluded. Recall@K = hits@K / min(K, n_heldout); NDCG@K = DCG@K / "
        "ideal DCG@K. peruser_test_*: the same models on the per-user split "
        "(prepared/user_item_matrix) of the held-out test users: train-split positives in, "
        "test-split positives ranked."),
    "next_item": (
        "Next item: each user's chronological sequence (prepared/session_sequences); the "
        "valid/test target is the item after the input sequence; full ranking over the "
        "vocabulary with every item the user rated before the target excluded (the input "
        "window's and older ones); HR/NDCG/MAP/Precision/MRR @ 1, 5, 10, 20 "
        "(one relevant item, so Recall@K = HR@K)."),
    "per_user_topk": (
        "Per-user split, full catalogue: train on the train split's positives (rating >= 4), "
        "rank every item for each user with the user's train items excluded; relevant = test "
        "ratings >= 4. Recall@K = hits@K / n_relevant (not capped); NDCG@K standard."),
}
SHOWN = ("protocol", "model", "test_ndcg_at_10", "test_recall_at_10", "test_recall_at_20",
         "test_ndcg_at_100", "test_hr_at_10", "test_mrr_at_10", "peruser_test_ndcg_at_10",
         "peruser_test_recall_at_20", "train_seconds")


def ranking_table(rows: list[dict]) -> pa.Table:
    """Rows ordered by protocol then test NDCG@10 (descending), with a per-protocol rank."""
    rows = sorted(rows, key=lambda r: (r["protocol"], -r.get("test_ndcg_at_10", 0.0),
                                       r["model"]))
    keys = sorted({k for r in rows for k in r} - {"protocol", "model", "family", "run_id",
                                                   "started"})
    rank, previous, ranks = 0, None, []
    for r in rows:
        rank = rank + 1 if r["protocol"] == previous else 1
        previous = r["protocol"]
        ranks.append(rank)
    columns = {"protocol": pa.array([r["protocol"] for r in rows], pa.string()),
               "rank": pa.array(ranks, pa.int32()),
               **{k: pa.array([r[k] for r in rows], pa.string())
                  for k in ("model", "family", "run_id")},
               "started": pa.array([r["started"] for r in rows], pa.timestamp("ms", tz="UTC"))}
    for k in keys:
        columns[k] = pa.array([r.get(k) for r in rows], pa.float64())
    return pa.table(columns)


@dg.asset(key_prefix="reports", group_name=GROUP, kinds={"mlflow", "parquet"},
          deps=ranking_model_assets)
def ranking_comparison(context: dg.AssetExecutionContext, mlflow: MlflowResource,
                       lake: LakeResource) -> pa.Table:
    """Ranking leaderboard of the latest MLflow run per ranking model on the current data,
    one block per evaluation protocol, best test NDCG@10 first."""
    sha = file_sha256(lake.path(*ENCODED_FILE))
    table = ranking_table(ranking_rows(mlflow, sha))
    shown = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k in SHOWN}
             for r in table.to_pylist()]
    context.add_output_metadata({
        "dagster/row_count": table.num_rows,
        "leaderboard": dg.MetadataValue.md(markdown_table(shown)),
        "protocols": dg.MetadataValue.md("\n".join(f"- **{k}**: {v}"
                                                   for k, v in PROTOCOLS.items())),
        "encoded_ratings_sha256": sha, "mlflow_ui": mlflow.ui_command()})
    return table


ranking_evaluate_assets = [ranking_comparison]
