"""Benchmark the ranking models on ml-latest-small: strong generalization, next item, top-K.

1. Strong generalization (Liang et al. 2018 protocol): ratings >= 4 are positives, items need
   >= 5 users and users >= 5 positives; 100 validation and 100 test users (seeded) are held
   out entirely, 80 % of each one's positives (random) are folded in and the rest ranked.
   Recall@20, Recall@50 (divided by min(K, held-out items)) and NDCG@100. Mult-VAE,
   Mult-DAE, the autoencoder (implicit mode), EASE and popularity; each model's
   hyperparameters are picked on the validation users only (small grids below), then scored
   once on the test users; the learned models train on the train users' rows only.
2. Next item, leave last one out: 5-core ratings, ``user_temporal`` split with
   ``leave_last_k=1`` (valid = second-to-last item, test = last), full ranking over the item
   vocabulary with every item the user has already rated excluded. HR/NDCG/MRR@10 (and @1, 5,
   20 in the JSON). GRU4Rec and SASRec (early-stopped on valid NDCG@10) beside popularity and
   the last-item co-occurrence baseline. Sequence models see the last 50 items; they train on
   windows of 51 tokens cut from each user's whole training history (``--history N``: the
   last N items only; every consecutive pair kept once), with the full softmax (``--loss
   sampled``: 512 popularity-sampled negatives); co-occurrence counts the same history.
3. Per-user top-K (the two-tower asset's protocol, the assets' default data: no filter,
   ``user_temporal`` 80/10/10 by time within each user): relevant = valid/test rating >= 4,
   every train item excluded (for test the valid items too), the whole catalogue ranked;
   Recall@20, NDCG@10, coverage@10.
   Two-tower (genre + year item tower, in-batch softmax with log-Q correction; picked on
   valid NDCG@10) beside EASE (on the train positives, λ picked the same way) and popularity.
4. Per trained model: mean epoch time and training samples/s (user rows for the
   autoencoders, sequences for GRU4Rec/SASRec, positive pairs for two-tower).

Usage::

    .venv/bin/python bench/ranking_bench.py --json bench/results/ranking_small.json
    .venv/bin/python bench/ranking_bench.py --device cuda --epochs-scale 2

The device is ``auto`` (CUDA when present) unless ``--device`` says otherwise; nothing else
changes on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from recsys_pipeline import schema
from recsys_pipeline.data.clean import clean_table
from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.filter import FilterConfig, filter_ratings
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.movielens import detect_release, read_table
from recsys_pipeline.data.sessions import SessionConfig, Sessions, build_sessions, token_lookup
from recsys_pipeline.data.sparse import SparseConfig, build_matrices
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.evaluation.strong import UserIndependentScorer, evaluate_fold_in
from recsys_pipeline.evaluation.topk import ItemSets, evaluate_topk
from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel
from recsys_pipeline.models.deepfm import year_buckets
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.models.sasrec import SASRecConfig, SASRecModel
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import pick_device, synchronize
from recsys_pipeline.training.ranking_data import (
    CSRTensors,
    pairs_from_csr,
    sequence_windows,
    training_sequences,
)
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking

DATA = Path(__file__).resolve().parents[1] / "data_lake" / "raw" / "ml-latest-small"
STRONG_KS = (20, 50, 100)
CONTEXT = 50  # items a sequence model sees; training rows are windows of CONTEXT + 1
NEXT_KS = (1, 5, 10, 20)
TOPK_KS = (10, 20, 100)


@dataclass
class Row:
    """One benchmark line: a model with its chosen hyperparameters."""

    task: str
    model: str
    params: str
    valid: float
    test: dict[str, float]
    fit_seconds: float
    epochs: int = 0
    best_epoch: int = 0
    epoch_seconds: float = float("nan")
    samples_per_s: float = float("nan")
    grid: list[dict[str, Any]] = field(default_factory=list)


def load_ratings(path: Path, table: str = "ratings") -> pa.Table:
    """A clean table of the release at ``path`` (the project's reader and cleaner)."""
    release = detect_release(path)
    clean, _ = clean_table(table, read_table(release, table))
    return clean


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


Grid = list[tuple[str, Callable[[], Any], dict[str, Any]]]


def fit_and_pick(name: str, task: str, grid: Grid,
                 make_data: Callable[[], Any], train_config: Callable[..., RankingTrainConfig],
                 validate: Callable[[Any], dict], monitor: str, test: Callable[[Any], dict],
                 device: torch.device) -> Row:
    """Train each grid point with early stopping on ``validate``; test the best one once."""
    best, tried = None, []
    for label, build, overrides in grid:
        model = build()
        result, seconds = timed(lambda m=model, o=overrides: fit_ranking(
            m, make_data(), validate, train_config(**o)), device)
        hist = result.history
        tried.append({"params": label, "valid": result.best_metric, "best_epoch":
                      result.best_epoch, "epochs": len(hist), "seconds": round(seconds, 2)})
        print(f"  {name:<12} {label:<44} valid {monitor}={result.best_metric:.4f} "
              f"(epoch {result.best_epoch}/{len(hist)}, {seconds:.1f}s)", flush=True)
        if best is None or result.best_metric > best[1].best_metric:
            best = (label, result, model, seconds)
    label, result, model, seconds = best
    hist = result.history
    return Row(task, name, label, result.best_metric, test(model), seconds, len(hist),
               result.best_epoch, float(np.mean([h["epoch_train_seconds"] for h in hist])),
               float(np.mean([h["samples_per_s"] for h in hist])), tried)


def ease_row(task: str, train: sp.csr_matrix, lambdas: tuple[float, ...],
             validate: Callable[[Any], dict], monitor: str, test: Callable[[Any], dict],
             device: torch.device) -> Row:
    """Fit EASE for each λ, keep the best on ``validate``; test it once."""
    grid = []
    for lam in lambdas:
        model, secs = timed(lambda lam=lam: EASEModel.fit(train, EASEConfig(l2=lam),
                                                          device=device), device)
        grid.append((validate(model)[monitor], lam, model, secs))
    v, lam, model, secs = max(grid, key=lambda g: g[0])
    return Row(task, "EASE", f"l2={lam:g}", v, test(model), secs,
               grid=[{"params": f"l2={g[1]:g}", "valid": g[0]} for g in grid])


# --- 1. strong generalization ------------------------------------------------------------
def strong_data(ratings: pa.Table, seed: int) -> tuple[sp.csr_matrix, tuple, tuple]:
    filtered, _ = filter_ratings(ratings, FilterConfig(rating_threshold=4.0, min_item_ratings=5,
                                                       min_user_ratings=5))
    encoded, maps = encode_ids(filtered)
    splits = split_ratings(encoded, SplitConfig(
        method="strong_generalization", n_valid_users=100, n_test_users=100,
        fold_in_fraction=0.8, fold_in_by="random", drop_cold_start=True, seed=seed))
    mats = build_matrices(splits, maps.n_users, maps.n_items, SparseConfig())
    return mats.binary["train"], mats.fold_in_pair("valid"), mats.fold_in_pair("test")


def run_strong(ratings: pa.Table, args: argparse.Namespace, device: torch.device) -> list[Row]:
    train, (vf, vh), (tf, th) = strong_data(ratings, args.seed)
    n_users, n_items = train.shape
    held = sum(int((m.getnnz(1) > 0).sum()) for m in (vh, th))
    print(f"strong generalization: {n_users} users ({n_users - held} train) x {n_items} items, "
          f"{train.nnz} train positives", flush=True)

    def valid(m: Any) -> dict:
        return evaluate_fold_in(m, vf, vh, ks=STRONG_KS)

    def test(m: Any) -> dict:
        return evaluate_fold_in(m, tf, th, ks=STRONG_KS)

    rows = []
    users, items = train.nonzero()
    pop, secs = timed(lambda: PopularityModel.fit(
        RatingData.from_arrays(users, items, np.ones(users.size), device=device),
        n_users, n_items), device)
    pop_scorer = UserIndependentScorer(pop)
    rows.append(Row("strong", "popularity", "-", valid(pop_scorer)["ndcg@100"], test(pop_scorer),
                    secs))
    rows.append(ease_row("strong", train, (50.0, 100.0, 200.0, 500.0, 1000.0), valid,
                         "ndcg@100", test, device))
    scale = args.epochs_scale

    def config(batch_size: int = 128, weight_decay: float = 0.0) -> RankingTrainConfig:
        return RankingTrainConfig(epochs=int(400 * scale), batch_size=batch_size, lr=1e-3,
                                  weight_decay=weight_decay, patience=20, eval_every=2,
                                  monitor="valid_ndcg@100", seed=args.seed, device=str(device))

    def data() -> CSRTensors:  # the train users' rows (held-out users' rows are empty)
        return CSRTensors.from_scipy(train).nonempty()

    def vae(hidden: tuple[int, ...], latent: int, variational: bool, steps: int = 2000
            ) -> Callable[[], MultVAEModel]:
        return lambda: MultVAEModel(n_users, n_items, MultVAEConfig(
            hidden=hidden, latent=latent, anneal_cap=0.2, total_anneal_steps=steps,
            variational=variational, seed=args.seed))

    # Mult-VAE: the paper's 600-200 and a shallow 200 code (400 train users only), β annealed
    # to 0.2 over 2,000 steps of 64 rows (the paper: 200k steps of 500 rows on ML-20M)
    vae_grid: Grid = [
        (f"{name} cap=0.2 anneal=2000 batch=64", vae(hidden, 200, True), {"batch_size": 64})
        for name, hidden in (("600-200", (600,)), ("200", ()))]
    rows.append(fit_and_pick("Mult-VAE", "strong", vae_grid, data, config, valid,
                             "ndcg@100", test, device))
    # Mult-DAE: the paper's L2 weight penalty λ = 0.01 (Adam weight_decay) and input dropout
    dae_grid: Grid = [
        (f"{latent} weight_decay={wd:g}", vae((), latent, False), {"weight_decay": wd})
        for latent, wd in ((200, 0.01), (200, 0.003), (400, 0.01), (600, 0.01))]
    rows.append(fit_and_pick("Mult-DAE", "strong", dae_grid, data, config, valid,
                             "ndcg@100", test, device))
    ae_grid: Grid = [
        (f"512-128 selu drop=.5 w0={w}{' tied' if tied else ''}{' refeed' if refeed else ''}",
         lambda w=w, tied=tied, refeed=refeed: AutoEncoderModel(n_users, n_items,
             AutoEncoderConfig(hidden=(512, 128), dropout=0.5, unobserved_weight=w,
                               constrained=tied, refeed=refeed, clamp=False, seed=args.seed)),
         {})
        for w, tied, refeed in ((0.2, True, False), (0.5, True, False), (0.2, True, True))]
    rows.append(fit_and_pick("AutoEncoder", "strong", ae_grid, data, config, valid,
                             "ndcg@100", test, device))
    learned = max(rows[2:], key=lambda r: r.valid)
    print(f"  best learned model on the validation users: {learned.model} ({learned.params}); "
          f"test NDCG@100 {learned.test['ndcg@100']:.4f} vs EASE {rows[1].test['ndcg@100']:.4f}",
          flush=True)
    return rows + implicit_rows("strong", train, valid, "ndcg@100", test, args)


# --- peers: implicit's ALS and BM25 item-kNN, fitted and scored on the same data ---------
# implicit (github.com/benfred/implicit) is a benchmark-only extra
# (bench/requirements-bench.txt); without it these rows are left out with a note.
# (factors, regularization, alpha): on seed 42's validation users a 150-point sweep
# (factors 32-512, regularization 0.1-200, alpha 1-50) peaked at regularization 10 with
# alpha 2 (0.361-0.363 NDCG@100 for 64-512 factors), then alpha 5 (0.357-0.358)
ALS_GRID = tuple((f, r, a) for f in (64, 256)
                 for r, a in ((1.0, 2.0), (10.0, 2.0), (10.0, 5.0), (50.0, 10.0)))
BM25_KS = (100, 500, 1000)  # neighbours per item; 20-1000 swept on seed 42: more was better


class ImplicitScorer(torch.nn.Module):
    """Our evaluators' interface over a fitted implicit model (CPU, float32 scores).

    ALS scores ``user factors @ item factors``; a held-out user's factors are solved from
    the fold-in row by implicit's own ``recalculate_user`` (one least-squares step against the
    fixed item factors, as its ``recommend(..., recalculate_user=True)`` does). Item-kNN scores
    ``row @ similarity``, the sum its ``recommend`` ranks by.
    """

    def __init__(self, model: Any, train: sp.csr_matrix) -> None:
        super().__init__()
        self.model, self.rows = model, train  # not .train: nn.Module.train() is a method
        self.n_users, self.n_items = train.shape
        self.register_buffer("anchor", torch.zeros(0))  # evaluators read the device from it

    def _from_rows(self, rows: sp.csr_matrix) -> torch.Tensor:
        if hasattr(self.model, "item_factors"):
            users = self.model.recalculate_user(np.arange(rows.shape[0]), rows)
            scores = users @ np.asarray(self.model.item_factors).T
        else:
            scores = (rows @ self.model.similarity).toarray()
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of training users (per-user protocol).  # [B, n_items]"""
        idx = users.cpu().numpy()
        if hasattr(self.model, "user_factors"):
            scores = np.asarray(self.model.user_factors)[idx] @ np.asarray(
                self.model.item_factors).T
            return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        return self._from_rows(self.rows[idx])

    def score_all_from(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores from dense fold-in rows (strong generalization).  # [B, n_items]"""
        return self._from_rows(sp.csr_matrix(inputs.cpu().numpy().astype(np.float32)))


def check_against_recommend(scorer: ImplicitScorer, train: sp.csr_matrix, n_users: int = 20,
                            k: int = 20) -> None:
    """The adapter scores as implicit's own ``recommend`` does (rated items filtered), for the
    first training users, from their stored factors / rows and, for ALS, re-solved from their
    rows (the fold-in path): implicit's top-``k`` items get our scores, and our top-``k``
    scores are the same values (ties may order items differently). Raises AssertionError."""
    model = scorer.model
    users = np.flatnonzero(train.getnnz(1) > 0)[:n_users]
    rows = train[users]
    seen = torch.from_numpy(rows.toarray() > 0)
    paths = [(scorer.score_all(torch.from_numpy(users)), {})]
    if hasattr(model, "item_factors"):
        paths.append((scorer.score_all_from(torch.from_numpy(rows.toarray())),
                      {"recalculate_user": True}))
    for scores, kw in paths:
        scores = scores.masked_fill(seen, -torch.inf)
        top = torch.topk(scores, k).values.numpy()
        for i, user in enumerate(users):
            ids, theirs = model.recommend(int(user), rows[i], N=k,
                                          filter_already_liked_items=True, **kw)
            ours = scores[i, torch.from_numpy(ids.astype(np.int64))].numpy()
            n = int(np.isfinite(theirs).sum())
            assert np.allclose(ours[:n], theirs[:n], rtol=1e-4, atol=1e-5) and np.allclose(
                top[i, :n], theirs[:n], rtol=1e-4, atol=1e-5), (type(model).__name__, kw,
                                                                int(user))


def implicit_rows(task: str, train: sp.csr_matrix, validate: Callable[[Any], dict],
                  monitor: str, test: Callable[[Any], dict], args: argparse.Namespace
                  ) -> list[Row]:
    """implicit's ALS (factors x regularization x alpha, 15 iterations) and BM25 item-kNN
    (K neighbours), each picked on ``validate`` like our models and tested once."""
    try:
        import implicit
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import BM25Recommender
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("  implicit not installed: its rows are left out "
              "(.venv/bin/pip install -r bench/requirements-bench.txt)", flush=True)
        return []
    warnings.filterwarnings("ignore", "Method expects CSR input", module="implicit")
    train = sp.csr_matrix(train, dtype=np.float32)
    threads = max(args.threads, 1)
    grids = {
        "ALS (implicit)": [(f"factors={f} reg={r:g} alpha={a:g}",
                            lambda f=f, r=r, a=a: AlternatingLeastSquares(
                                factors=f, regularization=r, alpha=a, iterations=15,
                                num_threads=threads, random_state=args.seed))
                           for f, r, a in ALS_GRID],
        "BM25 kNN (implicit)": [(f"K={k} K1=1.2 B=0.75",
                                 lambda k=k: BM25Recommender(K=k, num_threads=threads))
                                for k in BM25_KS]}
    rows = []
    for name, grid in grids.items():
        tried, best = [], None
        for label, build in grid:
            model = build()
            t0 = time.perf_counter()
            with threadpool_limits(threads, "blas"):  # implicit's advice: no BLAS threadpool
                model.fit(train, show_progress=False)
            seconds = time.perf_counter() - t0
            scorer = ImplicitScorer(model, train)
            check_against_recommend(scorer, train)
            v = validate(scorer)[monitor]
            tried.append({"params": label, "valid": v, "seconds": round(seconds, 2)})
            print(f"  {name:<20} {label:<36} valid {monitor}={v:.4f} ({seconds:.1f}s)",
                  flush=True)
            if best is None or v > best[1]:
                best = (label, v, scorer, seconds)
        label, v, scorer, seconds = best
        rows.append(Row(task, name, f"{label} (implicit {implicit.__version__})", v,
                        test(scorer), seconds, grid=tried))
    return rows


# --- 2. next item --------------------------------------------------------------------------
@dataclass
class NextItemData:
    sessions: Sessions
    valid_exclude: ItemSets
    test_exclude: ItemSets
    n_items: int
    train_items: np.ndarray


def _history_sets(tables: list[pa.Table], rows_users: np.ndarray, lookup: np.ndarray,
                  n_users: int) -> ItemSets:
    """Token sets of every item each evaluated user rated in ``tables`` (row = batch row)."""
    row_of = np.full(n_users, -1, np.int64)
    row_of[rows_users] = np.arange(rows_users.size)
    users = np.concatenate([t.column(schema.USER_IDX).to_numpy() for t in tables])
    items = np.concatenate([t.column(schema.ITEM_IDX).to_numpy() for t in tables])
    keep = (row_of[users] >= 0) & (lookup[items] > 0)
    return ItemSets.from_pairs(torch.from_numpy(row_of[users][keep]),
                               torch.from_numpy(lookup[items][keep].astype(np.int64)),
                               rows_users.size)


def next_item_data(ratings: pa.Table, max_len: int = 0) -> NextItemData:
    """5-core leave-last-one-out sequences; ``max_len`` 0 keeps every user's whole history."""
    filtered, _ = filter_ratings(ratings, FilterConfig(min_user_ratings=5, min_item_ratings=5,
                                                       k_core=True))
    encoded, maps = encode_ids(filtered)
    splits = split_ratings(encoded, SplitConfig(method="user_temporal", leave_last_k=1))
    if max_len == 0:
        max_len = int(np.bincount(encoded.column(schema.USER_IDX).to_numpy()).max())
    sessions = build_sessions(splits, maps.n_users, maps.n_items, SessionConfig(max_len=max_len))
    lookup = token_lookup(sessions.vocab, maps.n_items)
    valid_ex = _history_sets([splits.train], sessions.valid.user_idx, lookup, maps.n_users)
    test_ex = _history_sets([splits.train, splits.valid], sessions.test.user_idx, lookup,
                            maps.n_users)
    return NextItemData(sessions, valid_ex, test_ex, maps.n_items,
                        splits.train.column(schema.ITEM_IDX).to_numpy())


class PopularityNext(torch.nn.Module):
    """The popularity model (``models.popularity``) as a next-token scorer."""

    def __init__(self, model: PopularityModel, vocab: np.ndarray) -> None:
        super().__init__()
        self.n_vocab = int(vocab.size)
        counts = model.counts.cpu()[torch.from_numpy(vocab.astype(np.int64))]
        self.register_buffer("scores", torch.cat([torch.tensor([float("-inf")]), counts]))

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.scores.repeat(torch.as_tensor(tokens).shape[0], 1)


def run_next_item(ratings: pa.Table, args: argparse.Namespace, device: torch.device) -> list[Row]:
    data = next_item_data(ratings, args.history)
    s = data.sessions
    n_vocab = s.vocab.size
    print(f"next item: {s.train.tokens.shape[0]} users, vocabulary {n_vocab}, "
          f"{int(s.train.lengths.sum())} train items, {len(s.valid.targets)} valid / "
          f"{len(s.test.targets)} test targets", flush=True)

    # inputs: the last CONTEXT items; every earlier item of the user is excluded all the same
    def valid(m: Any) -> dict:
        return evaluate_next_item(m, s.valid.tokens[:, -CONTEXT:], s.valid.targets, NEXT_KS,
                                  data.valid_exclude)

    def test(m: Any) -> dict:
        return evaluate_next_item(m, s.test.tokens[:, -CONTEXT:], s.test.targets, NEXT_KS,
                                  data.test_exclude)

    rows = []
    items = data.train_items
    pop, secs = timed(lambda: PopularityNext(PopularityModel.fit(
        RatingData.from_arrays(np.zeros_like(items), items, np.ones(items.size)), 1,
        data.n_items), s.vocab), device)
    rows.append(Row("next", "popularity", "-", valid(pop)["ndcg@10"], test(pop), secs))
    for backoff in (False, True):
        model, secs = timed(lambda b=backoff: CooccurrenceModel.fit(
            s.train.tokens, n_vocab, CooccurrenceConfig(popularity_backoff=b)), device)
        rows.append(Row("next", "co-occurrence" + (" +pop" if backoff else ""), "window=1",
                        valid(model)["ndcg@10"], test(model), secs))
    scale = args.epochs_scale

    def config(lr: float = 3e-3) -> RankingTrainConfig:
        return RankingTrainConfig(epochs=int(40 * scale), batch_size=64, lr=lr,
                                  patience=8, monitor="valid_ndcg@10", seed=args.seed,
                                  device=str(device), grad_clip=5.0)

    windows = sequence_windows(s.train.tokens, CONTEXT + 1)
    print(f"  {windows.shape[0]} training windows of <= {CONTEXT + 1} tokens", flush=True)

    def seqs() -> Any:
        return training_sequences(windows)

    loss, negs = args.loss, 512
    # the previous session's pick (separate input/output embeddings), then GRU4Rec's
    # "constrained embedding" (the reference implementation's tuned setting: the output
    # item embeddings are the inputs, embedding_dim = hidden), all at Adam lr 1e-2
    gru_shapes = [(64, 128, False, 0.4)] + [(d, d, True, drop) for d in (64, 128)
                                            for drop in (0.2, 0.4)]
    gru_grid: Grid = [(f"emb={emb} hidden={hid}{' tied' if tied else ''} drop={drop} {loss}",
                       lambda emb=emb, hid=hid, tied=tied, drop=drop: GRU4RecModel(
                           n_vocab, GRU4RecConfig(embedding_dim=emb, hidden=hid, tied=tied,
                                                  dropout=drop, loss=loss, n_negatives=negs,
                                                  seed=args.seed)), {"lr": 1e-2})
                      for emb, hid, tied, drop in gru_shapes]
    rows.append(fit_and_pick("GRU4Rec", "next", gru_grid, seqs, config, valid, "ndcg@10", test,
                             device))
    # SASRec at GRU4Rec's best width too (d 128; dropout 0.2 there scored lower on validation)
    sas_grid: Grid = [(f"d={dim} blocks=2 heads=1 drop={drop} {loss}",
                       lambda dim=dim, drop=drop: SASRecModel(n_vocab, SASRecConfig(
                           max_len=CONTEXT, dim=dim, n_blocks=2, dropout=drop, loss=loss,
                           n_negatives=negs, seed=args.seed)), {})
                      for dim, drop in ((64, 0.2), (64, 0.4), (128, 0.4))]
    rows.append(fit_and_pick("SASRec", "next", sas_grid, seqs, config, valid, "ndcg@10", test,
                             device))
    return rows


# --- 3. per-user top-K (two-tower's protocol) ---------------------------------------------
def run_topk(ratings: pa.Table, movies: pa.Table, args: argparse.Namespace,
             device: torch.device) -> list[Row]:
    """The assets' defaults: no filter, ``user_temporal`` 80/10/10 (each user's latest 10 %
    to test), relevant = rating >= 4, every train item excluded (for test the valid items
    too), the whole catalogue ranked."""
    encoded, maps = encode_ids(ratings)
    splits = split_ratings(encoded, SplitConfig())
    mats = build_matrices(splits, maps.n_users, maps.n_items, SparseConfig())
    train = mats.explicit["train"]
    n_users, n_items = train.shape
    positives = sp.csr_matrix((train >= 4.0).astype(np.float32))
    exclude = RatingData.from_csr(train)
    known_at_test = RatingData.from_csr(sp.csr_matrix(train + mats.explicit["valid"]))
    valid_rows, test_rows = (RatingData.from_csr(mats.explicit[s]) for s in ("valid", "test"))
    print(f"per-user top-K: {n_users} users x {n_items} items, {train.nnz} train ratings "
          f"({positives.nnz} >= 4), {valid_rows.users.numel()} valid / "
          f"{test_rows.users.numel()} test ratings", flush=True)

    def valid(m: Any) -> dict:
        return evaluate_topk(m, valid_rows, exclude, TOPK_KS)

    def test(m: Any) -> dict:
        return evaluate_topk(m, test_rows, known_at_test, TOPK_KS)

    rows = []
    users, items = positives.nonzero()
    pop, secs = timed(lambda: PopularityModel.fit(
        RatingData.from_arrays(users, items, np.ones(users.size)), n_users, n_items), device)
    rows.append(Row("topk", "popularity", "train positives", valid(pop)["ndcg@10"], test(pop),
                    secs))
    rows.append(ease_row("topk", positives, (50.0, 200.0, 500.0, 1000.0), valid, "ndcg@10",
                         test, device))
    side = item_side_features(maps.items, movies)
    buckets, n_buckets = year_buckets(side.years, 10)

    def tower(features: bool, **kw: Any) -> Callable[[], TwoTowerModel]:
        def build() -> TwoTowerModel:
            m = TwoTowerModel(n_users, n_items, TwoTowerConfig(seed=args.seed, **kw),
                              n_genres=side.genres.shape[1] if features else 0,
                              n_year_buckets=n_buckets if features else 0)
            if features:
                m.set_item_features(side.genres, buckets)
            return m
        return build

    def config(lr: float = 5e-3) -> RankingTrainConfig:
        return RankingTrainConfig(epochs=int(40 * args.epochs_scale), batch_size=1024, lr=lr,
                                  patience=5, monitor="valid_ndcg@10", seed=args.seed,
                                  device=str(device))

    # in-batch softmax with log-Q correction (without it, validation NDCG@10 fell to 0.014 on
    # seed 42: popular items, the commonest in-batch negatives, get pushed down); the
    # temperature matters most (0.05 / 0.5 / 1.0 scored lower on validation, seed 42)
    tower_grid: Grid = [
        (f"d={d} T={t:g}{' genres+year' if f else ''}", tower(f, dim=d, temperature=t), {})
        for f, d, t in ((True, 64, 0.1), (True, 64, 0.2), (True, 64, 0.3), (False, 64, 0.2),
                        (True, 128, 0.2))]
    rows.append(fit_and_pick("two-tower", "topk", tower_grid, lambda: pairs_from_csr(positives),
                             config, valid, "ndcg@10", test, device))
    return rows + implicit_rows("topk", positives, valid, "ndcg@10", test, args)


# --- report --------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    cols = {"strong": ("recall@20", "recall@50", "ndcg@100"),
            "next": ("hr@10", "ndcg@10", "mrr@10"),
            "topk": ("recall@20", "ndcg@10", "coverage@10")}
    for task in ("strong", "next", "topk"):
        part = [r for r in rows if r.task == task]
        if not part:
            continue
        names = cols[task]
        print(f"\n{'model':<20}{'params':<46}{'valid':>8}" + "".join(f"{c:>11}" for c in names)
              + f"{'fit s':>8}{'epoch s':>9}{'samples/s':>11}")
        for r in part:
            print(f"{r.model:<20}{r.params[:45]:<46}{r.valid:>8.4f}"
                  + "".join(f"{r.test[c]:>11.4f}" for c in names)
                  + f"{r.fit_seconds:>8.1f}{r.epoch_seconds:>9.3f}{r.samples_per_s:>11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="ml-latest-small folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every epoch budget (early stopping still applies)")
    parser.add_argument("--only", choices=("strong", "next", "topk"), default=None)
    parser.add_argument("--history", type=int, default=0,
                        help="next item: train on each user's last N items (0: all of them)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--loss", choices=("sampled", "ce"), default="ce",
                        help="GRU4Rec/SASRec loss: the full softmax (default: higher validation "
                             "NDCG@10 here) or 512 popularity-sampled negatives (2-3x cheaper "
                             "on CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU torch threads (1: small per-step ops of the RNN and the "
                             "attention stall with more threads on a shared CPU)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", flush=True)
    ratings = load_ratings(args.data)
    t0 = time.perf_counter()
    rows = []
    if args.only in (None, "strong"):
        rows += run_strong(ratings, args, device)
    if args.only in (None, "next"):
        rows += run_next_item(ratings, args, device)
    if args.only in (None, "topk"):
        rows += run_topk(ratings, load_ratings(args.data, "movies"), args, device)
    total = time.perf_counter() - t0
    print_table(rows)
    print(f"\ntotal {total:.0f}s on {device}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": str(device), "torch": torch.__version__, "seed": args.seed,
            "epochs_scale": args.epochs_scale, "total_seconds": total,
            "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
