"""Fold-in models (EASE, Mult-VAE, autoencoder): planted blocks, closed form, fold-in purity,
save/load and determinism."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.evaluation.strong import UserIndependentScorer, evaluate_fold_in
from recsys_pipeline.evaluation.topk import ItemSets, top_k_items
from recsys_pipeline.models import ease
from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.models.ease import EASEConfig, EASEModel, ease_weights
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.models.ranking_base import FoldInModel, load_ranking_model
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.ranking_data import CSRTensors
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, Blocks


def train_sets(matrix: sp.csr_matrix) -> ItemSets:
    return ItemSets(torch.from_numpy(matrix.indptr).long(), torch.from_numpy(matrix.indices).long())


def top1_of_train_users(model: torch.nn.Module, blocks: Blocks) -> np.ndarray:
    _, top = top_k_items(model, torch.arange(N_USERS), 1, exclude=train_sets(blocks.train))
    return top[:, 0].cpu().numpy()


def fit_gradient(model: FoldInModel, blocks: Blocks, epochs: int) -> FoldInModel:
    config = RankingTrainConfig(epochs=epochs, batch_size=16, lr=1e-2, patience=None,
                                monitor="valid_ndcg@1", device="cpu", seed=11,
                                restore_best=False)
    fit_ranking(model, CSRTensors.from_scipy(blocks.train),
                lambda m: evaluate_fold_in(m, blocks.fold_in, blocks.heldout, ks=(1,)), config)
    return model


class FoldInContract:
    """Every fold-in model: planted answer, fold-in purity, save→load, seed, ids."""

    def fit_model(self, blocks: Blocks) -> FoldInModel:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self, blocks: Blocks) -> FoldInModel:
        return self.fit_model(blocks).eval()

    def test_ranks_missing_block_item_first(self, fitted: FoldInModel, blocks: Blocks) -> None:
        assert (top1_of_train_users(fitted, blocks) == blocks.missing).all()

    def test_folds_in_unseen_users(self, fitted: FoldInModel, blocks: Blocks) -> None:
        result = evaluate_fold_in(fitted, blocks.fold_in, blocks.heldout, ks=(1, 5))
        assert result["n_users"] == blocks.fold_in.shape[0]
        assert result["recall@1"] == 1.0 and result["ndcg@5"] == 1.0

    def test_fold_in_touches_nothing_but_its_row(self, fitted: FoldInModel,
                                                 blocks: Blocks) -> None:
        before = {k: v.clone() for k, v in fitted.state_dict().items()}
        rows = torch.from_numpy(blocks.fold_in.toarray())
        both = fitted.score_all_from(rows)  # [n_new, N_ITEMS]
        alone = fitted.score_all_from(blocks.fold_in[:1])  # CSR input, one row
        other = rows.clone()
        other[1:] = 1.0 - other[1:]  # change every other row of the batch
        torch.testing.assert_close(alone[0], both[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fitted.score_all_from(other)[0], both[0], rtol=1e-5, atol=1e-5)
        for k, v in fitted.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert fitted.training is False

    def test_score_all_matches_score_and_history(self, fitted: FoldInModel,
                                                 blocks: Blocks) -> None:
        users = torch.arange(N_USERS)
        full = fitted.score_all(users)
        assert full.shape == (N_USERS, N_ITEMS)  # non-square: a transpose cannot match
        uu, ii = torch.meshgrid(users, torch.arange(N_ITEMS), indexing="ij")
        pairs = fitted.score(uu.flatten(), ii.flatten()).view(N_USERS, N_ITEMS)
        torch.testing.assert_close(pairs, full, rtol=1e-5, atol=1e-5)
        history = fitted.history().dense_rows(users).numpy()
        assert np.array_equal(history != 0, blocks.train.toarray() != 0)

    def test_save_load_identical(self, fitted: FoldInModel, blocks: Blocks, tmp_path) -> None:
        fitted.save(tmp_path / "m")
        loaded = type(fitted).load(tmp_path / "m")
        assert type(loaded) is type(fitted) and loaded.config == fitted.config
        users = torch.arange(N_USERS)
        assert torch.equal(load_ranking_model(tmp_path / "m").score_all(users),
                           fitted.score_all(users))
        assert torch.equal(loaded.score_all_from(blocks.fold_in),
                           fitted.score_all_from(blocks.fold_in))

    def test_same_seed_same_result(self, fitted: FoldInModel, blocks: Blocks) -> None:
        again = self.fit_model(blocks)
        for (name, a), (_, b) in zip(fitted.state_dict().items(), again.state_dict().items(),
                                     strict=True):
            assert torch.equal(a, b), name

    def test_unknown_ids_and_bad_inputs_raise(self, fitted: FoldInModel) -> None:
        with pytest.raises(ValueError, match=f"unknown user_idx {N_USERS}"):
            fitted.score_all(torch.tensor([N_USERS]))
        with pytest.raises(ValueError, match=f"unknown item_idx {N_ITEMS}"):
            fitted.score(torch.tensor([0]), torch.tensor([N_ITEMS]))
        with pytest.raises(ValueError, match="n_items=27"):
            fitted.score_all_from(torch.zeros(2, N_USERS))


class TestEASE(FoldInContract):
    def fit_model(self, blocks: Blocks) -> FoldInModel:
        return EASEModel.fit(blocks.train, EASEConfig(l2=1.0), device="cpu")


class TestMultVAE(FoldInContract):
    def fit_model(self, blocks: Blocks) -> FoldInModel:
        config = MultVAEConfig(hidden=(32,), latent=8, dropout=0.2, total_anneal_steps=200,
                               seed=4)
        return fit_gradient(MultVAEModel(N_USERS, N_ITEMS, config), blocks, epochs=60)


class TestMultDAE(FoldInContract):
    def fit_model(self, blocks: Blocks) -> FoldInModel:
        config = MultVAEConfig(hidden=(), latent=8, dropout=0.2, variational=False, seed=4)
        return fit_gradient(MultVAEModel(N_USERS, N_ITEMS, config), blocks, epochs=60)

    def test_has_no_variance_head_and_no_kl(self, fitted: FoldInModel, blocks: Blocks) -> None:
        assert fitted.encoder[-1].out_features == 8  # the code only, no log σ² half
        x = CSRTensors.from_scipy(blocks.train).dense_rows(torch.arange(4))
        fitted.eval()
        mu, logvar = fitted.encode(x)
        logits = fitted.decode(mu)
        nll = -(torch.log_softmax(logits, 1) * x).sum(1).mean()
        assert logvar is None  # the loss is the multinomial term alone, whatever the step
        torch.testing.assert_close(fitted.training_loss((x,), step=10_000), nll)


class TestAutoEncoderImplicit(FoldInContract):
    config: ClassVar = AutoEncoderConfig(hidden=(32, 16), dropout=0.2, unobserved_weight=0.2,
                                         clamp=False, seed=4)

    def fit_model(self, blocks: Blocks) -> FoldInModel:
        return fit_gradient(AutoEncoderModel(N_USERS, N_ITEMS, self.config), blocks, epochs=60)


class TestAutoEncoderConstrainedRefeed(TestAutoEncoderImplicit):
    config: ClassVar = AutoEncoderConfig(hidden=(32, 16), dropout=0.2, unobserved_weight=0.2,
                                         clamp=False, constrained=True, refeed=True, seed=4)

    def test_decoder_is_tied(self, fitted: FoldInModel) -> None:
        assert len(fitted.decoder) == 0 and len(fitted.decoder_bias) == 2
        names = {n for n, _ in fitted.named_parameters()}
        assert not any(n.startswith("decoder.") for n in names)


def test_ease_matches_closed_form_on_hand_matrix() -> None:
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]],
                 dtype=np.float64)  # 5 users x 4 items
    lam = 2.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(4))
    expected = np.eye(4) - p @ np.diag(1.0 / np.diag(p))
    got = ease_weights(sp.csr_matrix(x), lam).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(np.diag(got) == 0.0)
    # item 0 (users 0, 2, 3) co-occurs with item 1 twice and item 3 once: B[1,0] > B[3,0]
    assert got[1, 0] > got[3, 0]
    model = EASEModel.fit(sp.csr_matrix(x), EASEConfig(l2=lam), device="cpu")
    np.testing.assert_allclose(model.score_all(torch.arange(5)).numpy(), x @ expected,
                               atol=1e-5)


def closed_form_ease(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_ease_blockwise_gram_and_in_place_solve_match_the_closed_form(
        monkeypatch: pytest.MonkeyPatch, block: int, device: torch.device) -> None:
    """Blocks that do and do not divide the catalogue (and one block for all of it)."""
    monkeypatch.setattr(ease, "GRAM_BLOCK", block)
    rng = np.random.default_rng(3)
    x = (rng.random((40, 17)) < 0.3) * rng.integers(1, 4, (40, 17))  # weighted, some empty
    expected = closed_form_ease(x.astype(np.float64), 5.0)
    got = ease_weights(sp.csr_matrix(x), 5.0, device=device)
    assert got.device.type == device.type and got.is_contiguous()
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-6)
    single = ease_weights(sp.csr_matrix(x), 5.0, float64=False, device=device)
    assert single.is_contiguous()
    single = single.cpu().numpy()
    np.testing.assert_allclose(single, expected, atol=1e-4)
    assert np.all(np.diag(single) == 0.0)


def test_ease_scores_sparse_rows_on_cpu_as_the_dense_product(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = sp.csr_matrix((rng.random((60, 300)) < 0.01).astype(np.float32))  # ~3 items a row
    model = EASEModel.fit(x, EASEConfig(l2=2.0), device="cpu")
    calls = []
    real_mm = torch.sparse.mm
    monkeypatch.setattr(torch.sparse, "mm", lambda a, b: calls.append(a.layout) or real_mm(a, b))
    got = model.score_all_from(x).numpy()
    assert calls == [torch.sparse_coo]  # the sparse branch ran
    np.testing.assert_allclose(got, x.toarray() @ model.weights.numpy(), atol=1e-5)
    monkeypatch.setattr(ease, "SPARSE_SCORING", 0.0)  # dense product for every input
    np.testing.assert_allclose(model.score_all_from(x).numpy(), got, atol=1e-5)
    assert len(calls) == 1


def test_ease_refuses_a_solve_larger_than_the_memory_available(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = sp.csr_matrix(np.eye(30))
    need64 = ease.ease_memory_bytes(30, True)
    block = 30 * 30 * 12  # one block of the sparse product: the whole of a small XᵀX
    assert need64 == (8 + 4) * 30 * 30 + block  # the matrix solved in place + float32 result
    assert ease.ease_memory_bytes(30, False) == 4 * 30 * 30 + block
    assert ease.ease_memory_bytes(27_133, True) == 12 * 27_133**2 + ease.GRAM_BLOCK * 27_133 * 12
    monkeypatch.setattr(ease, "available_memory", lambda device: need64 - 1)
    with pytest.raises(MemoryError, match=r"30 × 30 item-item solve \(float64\).*"
                                          r"min_item_users.*float64: false"):
        EASEModel.fit(x, EASEConfig(l2=1.0), device="cpu")
    model = EASEModel.fit(x, EASEConfig(l2=1.0, float64=False), device="cpu")  # fits in half
    assert model.weights.dtype == torch.float32 and model.weights.shape == (30, 30)
    monkeypatch.setattr(ease, "available_memory", lambda device: None)  # unknown: no check
    assert EASEModel.fit(x, EASEConfig(l2=1.0), device="cpu").weights.shape == (30, 30)
    with pytest.raises(ValueError, match=r"weights must be \[4, 4\], got \(3, 3\)"):
        EASEModel(3, 4, weights=torch.zeros(3, 3))


def test_popularity_fails_the_planted_blocks(blocks: Blocks) -> None:
    """The block test is not passable without personalisation."""
    users, items = blocks.train.nonzero()
    pop = PopularityModel.fit(RatingData.from_arrays(users, items, np.ones(users.size)),
                              N_USERS, N_ITEMS)
    assert (top1_of_train_users(pop, blocks) == blocks.missing).mean() < 0.7
    result = evaluate_fold_in(UserIndependentScorer(pop), blocks.fold_in, blocks.heldout,
                              ks=(1,))
    assert result["recall@1"] < 1.0
