"""Next-item models (GRU4Rec, SASRec, co-occurrence) on the planted cycle, padding handling,
save/load and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.models.cooccurrence import (
    CooccurrenceConfig,
    CooccurrenceModel,
    PopularityNext,
)
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.models.ranking_base import (
    SequenceModel,
    left_to_right_padding,
    load_ranking_model,
)
from recsys_pipeline.models.sasrec import SASRecConfig, SASRecModel
from recsys_pipeline.training.ranking_data import sequence_windows, training_sequences
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.ranking.planted import Cycle


def fit_sequence(model: SequenceModel, cycle: Cycle, epochs: int = 30) -> SequenceModel:
    config = RankingTrainConfig(epochs=epochs, batch_size=32, lr=1e-2, patience=None,
                                monitor="train_loss", mode="min", device="cpu", seed=3)
    fit_ranking(model, training_sequences(cycle.train), None, config)
    return model


class SequenceContract:
    """Every next-item model: planted cycle, padding width, save→load, seed, bad input."""

    def fit_model(self, cycle: Cycle) -> SequenceModel:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self, cycle: Cycle) -> SequenceModel:
        return self.fit_model(cycle).eval()

    def test_next_in_cycle_ranked_first(self, fitted: SequenceModel, cycle: Cycle) -> None:
        result = evaluate_next_item(fitted, cycle.inputs, cycle.targets, ks=(1, 5))
        assert result["hr@1"] == 1.0 and result["ndcg@5"] == 1.0 and result["mrr@5"] == 1.0
        assert result["n_rows"] == len(cycle.targets)

    def test_scores_ignore_padding_width(self, fitted: SequenceModel, cycle: Cycle) -> None:
        narrow = torch.from_numpy(cycle.inputs[:, -8:]).long()
        narrow = narrow[(narrow != 0).any(1)]
        wide = torch.cat([torch.zeros(narrow.shape[0], 3, dtype=torch.long), narrow], 1)
        scores = fitted.score_next(narrow)
        assert scores.shape == (narrow.shape[0], cycle.n_vocab + 1)
        assert torch.all(scores[:, 0] == float("-inf"))
        torch.testing.assert_close(fitted.score_next(wide), scores, rtol=1e-4, atol=1e-4)

    def test_save_load_identical(self, fitted: SequenceModel, cycle: Cycle, tmp_path) -> None:
        fitted.save(tmp_path / "m")
        loaded = type(fitted).load(tmp_path / "m")
        assert loaded.config == fitted.config and loaded.n_vocab == cycle.n_vocab
        assert torch.equal(loaded.score_next(cycle.inputs), fitted.score_next(cycle.inputs))
        assert type(load_ranking_model(tmp_path / "m")) is type(fitted)

    def test_same_seed_same_result(self, fitted: SequenceModel, cycle: Cycle) -> None:
        again = self.fit_model(cycle)
        for (name, a), (_, b) in zip(fitted.state_dict().items(), again.state_dict().items(),
                                     strict=True):
            assert torch.equal(a, b), name

    def test_bad_tokens_raise(self, fitted: SequenceModel, cycle: Cycle) -> None:
        with pytest.raises(ValueError, match=f"unknown token {cycle.n_vocab + 1}"):
            fitted.score_next(torch.tensor([[1, cycle.n_vocab + 1]]))
        with pytest.raises(ValueError, match="left-padded"):
            fitted.score_next(torch.tensor([[1, 2, 0]]))


class TestGRU4RecFullSoftmax(SequenceContract):
    config = GRU4RecConfig(embedding_dim=16, hidden=32, dropout=0.0, seed=1)

    def fit_model(self, cycle: Cycle) -> SequenceModel:
        return fit_sequence(GRU4RecModel(cycle.n_vocab, self.config), cycle)


class TestGRU4RecSampled(TestGRU4RecFullSoftmax):
    config = GRU4RecConfig(embedding_dim=16, hidden=32, dropout=0.1, loss="sampled",
                           n_negatives=6, seed=1)


class TestGRU4RecTied(TestGRU4RecFullSoftmax):
    config = GRU4RecConfig(embedding_dim=32, hidden=32, dropout=0.1, loss="sampled",
                           n_negatives=6, tied=True, seed=1)


def test_gru4rec_tied_shares_one_item_matrix(tmp_path) -> None:
    """Tied: the GRU reads the output embeddings, one matrix in the weights and on disk."""
    model = GRU4RecModel(9, GRU4RecConfig(embedding_dim=6, hidden=6, tied=True, seed=2))
    assert model.embedding is model.out_embedding
    n_item_params = sum(p.numel() for n, p in model.named_parameters() if "embedding" in n)
    assert n_item_params == 10 * 6  # 9 items + padding, once
    with torch.no_grad():
        model.out_embedding.weight[4] += 1.0  # moves item 4's input and output vector
    rows = torch.tensor([[0, 2, 4], [1, 2, 3]])
    before = model.eval().score_next(rows)
    model.save(tmp_path / "m")
    loaded = GRU4RecModel.load(tmp_path / "m")
    assert loaded.embedding is loaded.out_embedding
    assert torch.equal(loaded.score_next(rows), before)
    untied = GRU4RecModel(9, GRU4RecConfig(embedding_dim=6, hidden=6, seed=2))
    assert sum(p.numel() for n, p in untied.named_parameters() if "embedding" in n) == 120
    with pytest.raises(ValueError, match="tied embeddings need embedding_dim=8 equal to "
                                         "hidden=6"):
        GRU4RecConfig(embedding_dim=8, hidden=6, tied=True)


class TestSASRecFullSoftmax(SequenceContract):
    config = SASRecConfig(max_len=12, dim=16, n_blocks=1, dropout=0.0, seed=1)

    def fit_model(self, cycle: Cycle) -> SequenceModel:
        return fit_sequence(SASRecModel(cycle.n_vocab, self.config), cycle)


class TestSASRecSampled(TestSASRecFullSoftmax):
    config = SASRecConfig(max_len=12, dim=16, n_blocks=2, n_heads=2, dropout=0.1,
                          loss="sampled", n_negatives=6, seed=1)


class TestCooccurrence(SequenceContract):
    def fit_model(self, cycle: Cycle) -> SequenceModel:
        return CooccurrenceModel.fit(cycle.train, cycle.n_vocab)


def test_left_to_right_padding() -> None:
    right, lengths = left_to_right_padding(torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4], [0, 0, 0, 7]]))
    assert right.tolist() == [[5, 6, 0, 0], [1, 2, 3, 4], [7, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]


def test_gru4rec_trains_on_every_prefix() -> None:
    """The training loss is the mean next-item CE of every prefix of every row."""
    model = GRU4RecModel(9, GRU4RecConfig(embedding_dim=4, hidden=6, dropout=0.0)).eval()
    rows = torch.tensor([[0, 0, 3, 5, 2, 8], [4, 1, 1, 9, 6, 2]])
    expected = []
    for row in rows:  # reference: score each prefix on its own
        real = row[row != 0]
        for t in range(1, real.numel()):
            logits = model.score_next(real[:t][None]).clone()
            expected.append(F.cross_entropy(logits, real[t][None]))
    loss = model.training_loss((rows,), step=0)
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_sasrec_is_causal_and_ignores_padding() -> None:
    model = SASRecModel(9, SASRecConfig(max_len=6, dim=8, dropout=0.0)).eval()
    tokens = torch.tensor([[0, 0, 3, 5, 2, 8]])
    changed = tokens.clone()
    changed[0, 4:] = torch.tensor([7, 1])
    with torch.no_grad():
        a, b = model._states(tokens), model._states(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # earlier positions never see later items
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    assert torch.isfinite(a).all()  # padding queries do not produce NaN


def test_cooccurrence_counts_by_hand() -> None:
    tokens = np.array([[0, 1, 2, 3], [0, 0, 2, 3], [1, 3, 2, 1]])
    model = CooccurrenceModel.fit(tokens, 4, CooccurrenceConfig(popularity_backoff=False))
    # successions: 1→2, 2→3, 2→3, 1→3, 3→2, 2→1
    scores = model.score_next(torch.tensor([[0, 2], [0, 1], [3, 4]]))
    assert scores[0, 1:].tolist() == [1.0, 0.0, 2.0, 0.0]
    assert scores[1, 1:].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert scores[2, 1:].tolist() == [0.0, 0.0, 0.0, 0.0]
    window2 = CooccurrenceModel.fit(tokens, 4, CooccurrenceConfig(window=2,
                                                                   popularity_backoff=False))
    # two steps ahead adds 1→3, 3→1 (row 2) and 1→2 (row 2: 1,3,2)
    assert window2.score_next(torch.tensor([[1]]))[0, 1:].tolist() == [0.0, 2.0, 2.0, 0.0]
    backoff = CooccurrenceModel.fit(np.vstack([tokens, [[0, 0, 0, 3]]]), 4)
    never = backoff.score_next(torch.tensor([[4]]))[0]  # 4 is never followed: popularity only
    # counts 3, 3, 4, 0 for tokens 1..4, scaled by 1 / (4 + 1)
    torch.testing.assert_close(never[1:], torch.tensor([0.6, 0.6, 0.8, 0.0]))
    after2 = backoff.score_next(torch.tensor([[2]]))[0]
    assert after2[3] > after2[1] > after2[2]  # counts 2 > 1 > 0; the backoff never flips them


def test_popularity_baseline_ranks_by_training_count_whatever_the_input() -> None:
    tokens = np.array([[1, 2, 3, 3], [1, 2, 3, 3], [1, 2, 3, 4], [0, 0, 1, 3]])
    baseline = PopularityNext.of(CooccurrenceModel.fit(tokens, 5))  # counts 4, 3, 6, 1, 0
    assert baseline.n_vocab == 5
    scores = baseline.score_next(torch.tensor([[0, 2], [3, 4]]))
    assert scores[:, 0].isneginf().all()  # padding is never ranked
    assert scores[0, 1:].tolist() == scores[1, 1:].tolist() == [4.0, 3.0, 6.0, 1.0, 0.0]
    # evaluated like the sequence models, the input masked: row 1 ranks its target 3 first;
    # row 2 (3 masked) ranks 1 then its target 2
    m = evaluate_next_item(baseline, np.array([[0, 1], [0, 3]]), np.array([3, 2]), ks=(1, 2))
    assert m["hr@1"] == 0.5 and m["mrr@2"] == 0.75 and m["hr@2"] == 1.0


def test_sequence_windows_keep_every_pair_once() -> None:
    tokens = np.array([[0, 0, 0, 1, 2, 3, 4, 5, 6, 7], [0] * 8 + [8, 9], [0] * 9 + [5]])
    windows = sequence_windows(tokens, 4)
    assert windows.tolist() == [[4, 5, 6, 7], [1, 2, 3, 4], [0, 0, 8, 9]]

    def pairs(rows: np.ndarray) -> list[tuple[int, int]]:
        return sorted((int(a), int(b)) for r in rows for a, b in zip(r[:-1], r[1:], strict=True)
                      if a and b)

    assert pairs(windows) == pairs(tokens)  # no next-item example lost or doubled
    assert sequence_windows(tokens[:, -3:], 5).tolist() == [[0, 0, 5, 6, 7], [0, 0, 0, 8, 9]]


def test_full_softmax_over_a_large_vocabulary_on_cpu_is_flagged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys_pipeline.training import ranking_experiment as rx

    monkeypatch.setattr(rx, "SLOW_CPU_SOFTMAX", 40)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    big = GRU4RecModel(41, GRU4RecConfig(embedding_dim=4, hidden=4, loss="ce"))
    message = rx.softmax_cost_warning(big, cpu)
    assert message is not None and "41 items" in message and "loss: sampled" in message
    assert rx.softmax_cost_warning(big, cuda) is None  # a GPU does the full softmax fast
    assert rx.softmax_cost_warning(GRU4RecModel(40, GRU4RecConfig(
        embedding_dim=4, hidden=4, loss="ce")), cpu) is None  # small enough
    sampled = SASRecModel(41, SASRecConfig(max_len=5, dim=8, loss="sampled", n_negatives=4))
    assert rx.softmax_cost_warning(sampled, cpu) is None
    assert rx.softmax_cost_warning(CooccurrenceModel(41), cpu) is None  # no softmax at all


@pytest.mark.parametrize(("key", "value"), [("dim", -8), ("max_len", 0), ("n_blocks", 0),
                                          ("n_heads", -1), ("ff_mult", 0)])
def test_sasrec_bad_sizes_name_the_key_and_value(key: str, value: int) -> None:
    # one line naming the field (was: all five names and the whole config repr)
    with pytest.raises(ValueError, match=f"^{key}={value} must be >= 1$"):
        SASRecConfig(**{key: value})
