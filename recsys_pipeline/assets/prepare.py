"""Prepare stage: filter -> encode ids -> split -> session sequences and sparse user vectors.

Lake layout (``data_lake/prepared/``): ``filtered_ratings``, ``encoded_ratings``,
``user_map``, ``item_map``, ``splits/{train,valid_fold_in,valid,test_fold_in,test,dropped}``
(+ ``splits/report.json``), ``session_sequences/`` and ``user_item_matrix/``.
"""

import datetime as dt

import dagster as dg
import pyarrow as pa

from recsys_pipeline import plots
from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.filter import FilterConfig, filter_ratings
from recsys_pipeline.data.profile import (
    counts_per,
    log_bins,
    percentiles,
    split_summary,
    table_summary,
)
from recsys_pipeline.data.sessions import SessionConfig, Sessions, build_sessions
from recsys_pipeline.data.sparse import SparseConfig, SplitMatrices, build_matrices
from recsys_pipeline.data.split import DROPPED, SplitConfig, Splits, split_ratings
from recsys_pipeline.metadata import markdown_table, png_markdown, table_metadata
from recsys_pipeline.resources import LakeResource

GROUP = "prepare"
PREFIX = "prepared"
SPLIT_TABLES = (*S.SPLIT_NAMES, DROPPED)


def split_key(name: str) -> dg.AssetKey:
    """Key of one split table: ``prepared/splits/<name>``."""
    return dg.AssetKey([PREFIX, "splits", name])


class FilteredRatingsConfig(dg.Config):
    """Which ratings to keep. Order: rating threshold, top-N items, item and user minimums
    (user counts taken among the kept items), repeated until stable with k_core."""

    min_user_ratings: int = 0  # users need at least this many ratings (0: off)
    min_item_ratings: int = 0  # items need at least this many ratings (0: off)
    top_n_items: int = 0  # keep only the N most-rated items (0: off)
    rating_threshold: float | None = None  # implicit feedback: keep ratings >= this
    k_core: bool = False  # repeat the minimum steps until nothing changes

    def to_core(self) -> FilterConfig:
        return FilterConfig(self.min_user_ratings, self.min_item_ratings,
                            self.top_n_items or None, self.rating_threshold, self.k_core)


class RatingSplitsConfig(dg.Config):
    """How to split: random, global_temporal, user_temporal or strong_generalization."""

    method: str = "user_temporal"  # see the class docstring for the four methods
    ratios: list[float] = [0.8, 0.1, 0.1]  # train/valid/test fractions
    seed: int = 42  # random and strong_generalization draws
    valid_start: str = ""  # global_temporal: ISO date of the valid cut ("" = ratio quantile)
    test_start: str = ""  # global_temporal: ISO date of the test cut ("" = ratio quantile)
    leave_last_k: int = 0  # user_temporal: last k ratings per user to test, k to valid (0: ratios)
    n_valid_users: int = 0  # strong_generalization: held-out validation users (0: ratios)
    n_test_users: int = 0  # strong_generalization: held-out test users (0: ratios)
    fold_in_fraction: float = 0.8  # strong_generalization: share of a held-out user's input
    fold_in_by: str = "time"  # strong_generalization: fold-in = earliest ("time") or "random"
    drop_cold_start: bool = False  # move valid/test rows of users/items unseen in train

    def to_core(self) -> SplitConfig:
        cuts = None
        if self.valid_start or self.test_start:
            if not (self.valid_start and self.test_start):
                raise ValueError("valid_start and test_start must be given together")
            cuts = tuple(dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC)
                         for d in (self.valid_start, self.test_start))
        return SplitConfig(
            method=self.method, ratios=tuple(self.ratios), seed=self.seed, cut_times=cuts,
            leave_last_k=self.leave_last_k or None, n_valid_users=self.n_valid_users or None,
            n_test_users=self.n_test_users or None, fold_in_fraction=self.fold_in_fraction,
            fold_in_by=self.fold_in_by, drop_cold_start=self.drop_cold_start)


class SessionSequencesConfig(dg.Config):
    """Next-item sequences from the train split."""

    max_len: int = 50  # keep each user's last L items
    min_item_count: int = 1  # items need this many train occurrences to enter the vocabulary
    pad_side: str = "left"  # left: padding first, latest item last (SASRec style); or right
    min_history: int = 1  # valid/test users need this many input items

    def to_core(self) -> SessionConfig:
        return SessionConfig(self.max_len, self.min_item_count, self.pad_side, self.min_history)


class UserItemMatrixConfig(dg.Config):
    """Sparse user vectors."""

    binarize_threshold: float = 0.0  # binary matrices keep ratings >= this (0: every rating)

    def to_core(self) -> SparseConfig:
        return SparseConfig(binarize_threshold=self.binarize_threshold)


@dg.multi_asset(
    name=f"{PREFIX}__filtered_ratings", group_name=GROUP,
    ins={"ratings": dg.AssetIn(key=["clean", "ratings"])},
    outs={"filtered_ratings": dg.AssetOut(key_prefix=PREFIX, kinds={"parquet", "pyarrow"},
                                          description="Ratings kept by the filters."),
          "filter_report": dg.AssetOut(key_prefix=PREFIX, io_manager_key="json_io_manager",
                                       description="The filters' config and each step's "
                                                   "counts; the split report carries the "
                                                   "config on to the models' runs.")})
def filtered_ratings(context: dg.AssetExecutionContext, config: FilteredRatingsConfig,
                     ratings: pa.Table):
    """Ratings kept by the filters, with rows/users/items before and after each step."""
    table, steps = filter_ratings(ratings, config.to_core())
    rows = [{"step": s.step, "reason": s.reason, "rows": f"{s.rows_before} -> {s.rows_after}",
             "users": f"{s.users_before} -> {s.users_after}",
             "items": f"{s.items_before} -> {s.items_after}"} for s in steps]
    meta = {**table_metadata(table), "filter_steps": dg.MetadataValue.md(markdown_table(rows)),
            "rows_dropped": ratings.num_rows - table.num_rows}
    report = {"config": config.model_dump(), "steps": rows}
    return (dg.Output(table, output_name="filtered_ratings", metadata=meta),
            dg.Output(report, output_name="filter_report"))


@dg.multi_asset(
    group_name=GROUP, ins={"ratings": dg.AssetIn(key=[PREFIX, "filtered_ratings"]),
                           "movies": dg.AssetIn(key=["clean", "movies"])},
    outs={"encoded_ratings": dg.AssetOut(key_prefix=PREFIX, kinds={"parquet"},
                                         description="Ratings with contiguous user_idx/item_idx."),
          "user_map": dg.AssetOut(key_prefix=PREFIX, kinds={"parquet"},
                                  description="user_idx -> MovieLens user_id."),
          "item_map": dg.AssetOut(key_prefix=PREFIX, kinds={"parquet"},
                                  description="item_idx -> MovieLens item_id and title.")})
def encoded_ratings(lake: LakeResource, ratings: pa.Table, movies: pa.Table):
    """Contiguous int32 indices, assigned by ascending original id, and the id maps."""
    encoded, maps = encode_ids(ratings, movies)
    plot_meta = _activity_plots(encoded, lake)
    return (
        dg.Output(encoded, metadata={**table_metadata(encoded), **plot_meta,
                                     **table_summary(encoded)}),
        dg.Output(maps.users, metadata=table_metadata(maps.users)),
        dg.Output(maps.items, metadata=table_metadata(maps.items)),
    )


def _activity_plots(encoded: pa.Table, lake: LakeResource) -> dict[str, object]:
    out = {}
    for col, what in ((S.USER_IDX, "user_activity"), (S.ITEM_IDX, "item_popularity")):
        labels, values = log_bins(counts_per(encoded, col))
        png = plots.bar_chart(labels, values, f"{what.replace('_', ' ')} (ratings per "
                              f"{col[:4]}, log bins)", "ratings (bin start)", f"{col[:4]}s",
                              path=lake.path("reports", f"{what}.png"), log_y=True)
        out[what] = png_markdown(png, what)
    return out


@dg.multi_asset(
    group_name=GROUP, ins={"encoded": dg.AssetIn(key=[PREFIX, "encoded_ratings"]),
                           "filter_report": dg.AssetIn(key=[PREFIX, "filter_report"])},
    outs={**{name: dg.AssetOut(key=split_key(name), kinds={"parquet"},
                               description=f"The {name} rows of the rating split.")
             for name in SPLIT_TABLES},
          "report": dg.AssetOut(key=split_key("report"), io_manager_key="json_io_manager",
                                description="The split's config and per-table counts.")})
def rating_splits(context: dg.AssetExecutionContext, config: RatingSplitsConfig,
                  encoded: pa.Table, filter_report: dict):
    """Train / valid / test (and fold-in) tables by the configured method; seeded. The report
    holds the split's config and the filters' (``filter``): the models' runs log both as
    ``data.split.*`` / ``data.filter.*`` params, and the champion gate compares only models
    trained under the same ones."""
    splits = split_ratings(encoded, config.to_core())
    summary = split_summary({n: getattr(splits, n) for n in SPLIT_TABLES})
    report = {"config": config.model_dump(), "filter": filter_report.get("config", {}),
              "summary": summary, "report": _jsonable(splits.report)}
    context.log.info("split %s: %s", config.method, {s["split"]: s["rows"] for s in summary})
    md = dg.MetadataValue.md(markdown_table(summary))
    outputs = [dg.Output(getattr(splits, n), output_name=n,
                         metadata={**table_metadata(getattr(splits, n)), "splits": md})
               for n in SPLIT_TABLES]
    return (*outputs, dg.Output(report, output_name="report", metadata={"splits": md}))


def _jsonable(report: object) -> dict:
    data = dict(vars(report)) if report is not None else {}
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in data.items()}


def splits_from(tables: dict[str, pa.Table]) -> Splits:
    """A core ``Splits`` from the split tables loaded as asset inputs."""
    return Splits(**{name: tables[name] for name in SPLIT_TABLES})


SPLIT_INS = {name: dg.AssetIn(key=split_key(name)) for name in SPLIT_TABLES}
_MAP_INS = {"user_map": dg.AssetIn(key=[PREFIX, "user_map"]),
            "item_map": dg.AssetIn(key=[PREFIX, "item_map"])}


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key="sessions_io_manager",
          kinds={"numpy", "parquet"}, ins={**SPLIT_INS, **_MAP_INS})
def session_sequences(context: dg.AssetExecutionContext, config: SessionSequencesConfig,
                      user_map: pa.Table, item_map: pa.Table, **split_tables: pa.Table
                      ) -> Sessions:
    """Chronological per-user item sequences (train) and next-item inputs/targets (valid,
    test), as Parquet list columns and padded int32 arrays."""
    sessions = build_sessions(splits_from(split_tables), user_map.num_rows, item_map.num_rows,
                              config.to_core())
    lengths = {n: percentiles(getattr(sessions, n).lengths) for n in ("train", "valid", "test")}
    context.add_output_metadata({
        **{k: int(v) for k, v in sessions.report.items()},
        "sequence_length_percentiles": dg.MetadataValue.md(markdown_table(
            [{"split": n, **p} for n, p in lengths.items()])),
        "array_shape": str(list(sessions.train.tokens.shape)),
    })
    return sessions


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key="matrices_io_manager",
          kinds={"scipy", "numpy"}, ins={**SPLIT_INS, **_MAP_INS})
def user_item_matrix(context: dg.AssetExecutionContext, config: UserItemMatrixConfig,
                     user_map: pa.Table, item_map: pa.Table, **split_tables: pa.Table
                     ) -> SplitMatrices:
    """User x item CSR matrices (explicit and binary) per split, one shared item space."""
    matrices = build_matrices(splits_from(split_tables), user_map.num_rows, item_map.num_rows,
                              config.to_core())
    shape = (user_map.num_rows, item_map.num_rows)
    rows = [{"split": n, "nnz_explicit": m.nnz, "nnz_binary": matrices.binary[n].nnz,
             "density": round(m.nnz / max(1, shape[0] * shape[1]), 6)}
            for n, m in matrices.explicit.items()]
    context.add_output_metadata({"shape": str(list(shape)),
                                 "matrices": dg.MetadataValue.md(markdown_table(rows))})
    return matrices


prepare_assets = [filtered_ratings, encoded_ratings, rating_splits, session_sequences,
                  user_item_matrix]
