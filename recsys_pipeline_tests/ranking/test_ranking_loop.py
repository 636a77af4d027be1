"""The ranking loop: early stopping with best-epoch restore, callback, resume, seeds."""

from __future__ import annotations

import math

import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.training.ranking_data import CSRTensors, TensorBatches
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, Blocks

VAE = MultVAEConfig(hidden=(16,), latent=4, dropout=0.2, total_anneal_steps=50, seed=2)


def run(blocks: Blocks, **overrides: object) -> tuple[MultVAEModel, object, list]:
    calls: list[tuple[int, dict]] = []
    model = MultVAEModel(N_USERS, N_ITEMS, VAE)
    config = RankingTrainConfig(**{"epochs": 8, "batch_size": 8, "lr": 1e-2, "device": "cpu",
                                   "monitor": "valid_ndcg@5", "patience": None, **overrides})
    result = fit_ranking(model, CSRTensors.from_scipy(blocks.train),
                         lambda m: evaluate_fold_in(m, blocks.fold_in, blocks.heldout, ks=(5,)),
                         config, on_epoch=lambda e, m: calls.append((e, m)))
    return model, result, calls


def test_callback_history_and_best_epoch_restore(blocks: Blocks) -> None:
    model, result, calls = run(blocks)
    assert [e for e, _ in calls] == list(range(1, 9)) == [h["epoch"] for h in result.history]
    for _, metrics in calls:
        assert {"train_loss", "valid_ndcg@5", "samples_per_s", "seconds"} <= set(metrics)
        assert metrics["samples_per_s"] > 0 and math.isfinite(metrics["train_loss"])
    values = [h["valid_ndcg@5"] for h in result.history]
    assert result.best_metric == max(values)
    assert result.best_epoch == values.index(max(values)) + 1  # first epoch reaching the max
    assert result.steps == 8 * math.ceil(N_USERS / 8)
    # the restored weights reproduce the best epoch's validation value
    now = evaluate_fold_in(model, blocks.fold_in, blocks.heldout, ks=(5,))["ndcg@5"]
    assert now == pytest.approx(result.best_metric)


def test_early_stop_after_patience(blocks: Blocks) -> None:
    _, result, calls = run(blocks, epochs=40, patience=2, min_delta=10.0)
    # nothing can improve by 10: stop after epoch 1 (first value) + 2 bad epochs
    assert len(calls) == 3 and result.stopped_early and result.best_epoch == 1


def test_same_seed_same_history_other_seed_differs(blocks: Blocks) -> None:
    _, a, _ = run(blocks, epochs=3)
    _, b, _ = run(blocks, epochs=3)
    _, c, _ = run(blocks, epochs=3, seed=9)
    losses = [[h["train_loss"] for h in r.history] for r in (a, b, c)]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_resume_reproduces_an_uninterrupted_run(blocks: Blocks, tmp_path) -> None:
    path = str(tmp_path / "ckpt.pt")
    model_a, straight, _ = run(blocks, epochs=6)
    run(blocks, epochs=3, checkpoint_path=path)
    model_b, resumed, calls = run(blocks, epochs=6, checkpoint_path=path)
    assert [e for e, _ in calls] == [4, 5, 6]
    key = ("epoch", "train_loss", "valid_ndcg@5")
    assert ([[h[k] for k in key] for h in resumed.history]
            == [[h[k] for k in key] for h in straight.history])
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_bad_monitor_and_empty_data_raise(blocks: Blocks) -> None:
    with pytest.raises(ValueError, match="monitor='valid_recall@7'"):
        run(blocks, epochs=1, monitor="valid_recall@7")
    with pytest.raises(ValueError, match="empty"):
        fit_ranking(MultVAEModel(N_USERS, N_ITEMS, VAE), TensorBatches(torch.zeros(0, 3)))
    with pytest.raises(ValueError, match="patience"):
        RankingTrainConfig(patience=0)


def test_nonempty_rows_batch_only_rows_with_entries() -> None:
    # rows 1 and 3 are empty, as the held-out users' rows of a strong-generalization train
    # matrix are: epochs must draw rows 0, 2, 4 only, while the full matrix stays the history
    dense = torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    csr = CSRTensors.from_scipy(sp.csr_matrix(dense.numpy()))
    assert len(csr) == 5
    live = csr.nonempty()
    assert len(live) == 3 and live.n_rows == 5
    (batch,) = live.batch(torch.tensor([2, 0, 1]))
    torch.testing.assert_close(batch, dense[[4, 0, 2]])
    moved = live.to("cpu")
    assert len(moved) == 3 and torch.equal(moved.active, torch.tensor([0, 2, 4]))
    model = MultVAEModel(5, 3, MultVAEConfig(hidden=(4,), latent=2, seed=0))
    result = fit_ranking(model, live, None, RankingTrainConfig(
        epochs=1, batch_size=2, monitor="train_loss", mode="min", device="cpu"))
    assert result.steps == 2  # ceil(3 live rows / 2), not ceil(5 / 2)
    assert model.history().n_rows == 5  # every user's row is still kept for scoring
