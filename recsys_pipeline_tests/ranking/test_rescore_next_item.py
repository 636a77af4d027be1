"""Re-scoring a next-item champion on a challenger's validation sequences
(``evaluation.rescore.rescore_next_item``): vocabularies of other size and order, inputs and
candidates limited to the items both know."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.evaluation.rescore import TokenSubset, rescore_next_item
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel

ITEM_IDS = np.arange(1, 11) * 10  # original ids 10..100; the cycle visits them in this order
N = ITEM_IDS.size
CONFIG = CooccurrenceConfig(popularity_backoff=True)


def _tokens(ids: np.ndarray, vocab_ids: np.ndarray) -> np.ndarray:
    """Original ids -> tokens of a vocabulary (token t = vocab_ids[t - 1]); 0 stays padding."""
    pos = {int(v): t + 1 for t, v in enumerate(vocab_ids)}
    return np.vectorize(lambda i: pos.get(int(i), 0))(ids)


def _cycle_model(vocab_ids: np.ndarray, extra: tuple[int, ...] = ()) -> CooccurrenceModel:
    """Co-occurrence counts of three laps of the cycle (then the ids ``extra``), in
    ``vocab_ids``' tokens (items it lacks are left out of the sequence, so their neighbours
    follow each other)."""
    laps = _tokens(np.r_[np.tile(ITEM_IDS, 3), extra][None, :], vocab_ids)
    laps = laps[:, laps[0] > 0]
    return CooccurrenceModel.fit(laps, len(vocab_ids), CONFIG)


def _validation() -> tuple[np.ndarray, np.ndarray]:
    """Row u: five cycle items from offset u (original ids), target the sixth."""
    starts = np.arange(N)
    window = ITEM_IDS[(starts[:, None] + np.arange(6)) % N]
    return window[:, :5], window[:, 5]


def test_same_model_under_permuted_vocabulary_scores_identically() -> None:
    rng = np.random.default_rng(0)
    champion_ids = rng.permutation(ITEM_IDS)
    champion, challenger = _cycle_model(champion_ids), _cycle_model(ITEM_IDS)
    inputs, targets = _validation()
    tokens, target_tokens = _tokens(inputs, ITEM_IDS), _tokens(targets, ITEM_IDS)
    champ, chal, rows, total = rescore_next_item(champion, champion_ids, challenger, ITEM_IDS,
                                                 tokens, target_tokens, "ndcg@3")
    direct = evaluate_next_item(challenger, tokens, target_tokens, (3,))["ndcg@3"]
    assert (rows, total) == (N, N)
    assert champ == pytest.approx(chal) == pytest.approx(direct) == pytest.approx(1.0)


def test_items_the_champion_lacks_are_neither_targets_nor_candidates() -> None:
    champion_ids = ITEM_IDS[:-1][::-1]  # no item 100, tokens in reverse order
    champion, challenger = _cycle_model(champion_ids), _cycle_model(ITEM_IDS)
    inputs, targets = _validation()
    tokens, target_tokens = _tokens(inputs, ITEM_IDS), _tokens(targets, ITEM_IDS)
    champ, chal, rows, total = rescore_next_item(champion, champion_ids, challenger, ITEM_IDS,
                                                 tokens, target_tokens, "hr@1")
    # the one row whose target is 100 is out; the row whose input ends with 100 stays: the
    # champion reads it without 100 (ends with 90; it learned 90 -> 10 without 100 between),
    # the challenger with it (100 -> 10); both put the target first
    assert (rows, total) == (N - 1, N)
    assert int((inputs[:, -1] == 100).sum()) == 1
    assert champ == pytest.approx(1.0) and chal == pytest.approx(1.0)


def test_an_item_the_champion_lacks_is_no_candidate() -> None:
    """The challenger learned that 100 follows everything (5 times each) more often than the
    cycle's next item (3 laps): its first choice is always 100, a miss over its own catalogue
    but no candidate beside a champion without 100, where its second choice counts."""
    champion_ids = ITEM_IDS[:-1]
    laps = np.tile(ITEM_IDS, 3)
    to_100 = np.repeat(np.stack([ITEM_IDS[:-1], np.full(N - 1, 100)], 1), 5, axis=0)
    rows = np.zeros((1 + len(to_100), laps.size), np.int64)
    rows[0] = _tokens(laps, ITEM_IDS)
    rows[1:, -2:] = _tokens(to_100, ITEM_IDS)
    challenger = CooccurrenceModel.fit(rows, N, CONFIG)
    inputs, targets = _validation()
    tokens, target_tokens = _tokens(inputs, ITEM_IDS), _tokens(targets, ITEM_IDS)
    full = evaluate_next_item(challenger, tokens, target_tokens, (1,))["hr@1"]
    _, chal, _, _ = rescore_next_item(_cycle_model(champion_ids), champion_ids, challenger,
                                      ITEM_IDS, tokens, target_tokens, "hr@1")
    # over its own catalogue it hits only where 100 is the target or already in the input
    assert full == pytest.approx(6 / N) and chal == pytest.approx(1.0)


class _Fixed(nn.Module):
    """Scores every token by a fixed preference, whatever the input."""

    def __init__(self, preference: np.ndarray) -> None:
        super().__init__()
        self.n_vocab = len(preference)
        self.register_buffer("pref", torch.as_tensor(np.r_[-np.inf, preference]).float())

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pref.expand(tokens.shape[0], -1).clone()


def test_a_worse_challenger_scores_lower_and_the_champion_keeps_its_ranking() -> None:
    champion = _cycle_model(ITEM_IDS)
    inputs, targets = _validation()
    tokens, target_tokens = _tokens(inputs, ITEM_IDS), _tokens(targets, ITEM_IDS)
    challenger = _Fixed(np.arange(N, dtype=np.float64))  # always prefers the last tokens
    champ, chal, _, _ = rescore_next_item(champion, ITEM_IDS, challenger, ITEM_IDS, tokens,
                                          target_tokens, "ndcg@3")
    assert champ == pytest.approx(1.0) and chal < 0.5
    assert chal == pytest.approx(evaluate_next_item(challenger, tokens, target_tokens,
                                                    (3,))["ndcg@3"])


def test_token_subset_gathers_shared_columns_in_shared_order() -> None:
    model = _Fixed(np.array([0.1, 0.2, 0.3, 0.4]))
    view = TokenSubset(model, np.array([4, 2]))  # shared 1 = model token 4, shared 2 = token 2
    scores = view.score_next(torch.tensor([[0, 3]]))
    assert view.n_vocab == 2
    assert torch.isinf(scores[0, 0]) and scores[0, 1:].tolist() == pytest.approx([0.4, 0.2])


def test_refuses_unsupported_metric_and_nothing_to_compare() -> None:
    model = _cycle_model(ITEM_IDS)
    inputs, targets = _validation()
    tokens, target_tokens = _tokens(inputs, ITEM_IDS), _tokens(targets, ITEM_IDS)
    with pytest.raises(ValueError, match="rmse"):
        rescore_next_item(model, ITEM_IDS, model, ITEM_IDS, tokens, target_tokens, "rmse")
    with pytest.raises(ValueError, match="share 0 items"):
        rescore_next_item(model, ITEM_IDS + 1, model, ITEM_IDS, tokens, target_tokens,
                          "ndcg@3")
    with pytest.raises(ValueError, match="too few"):
        rescore_next_item(model, ITEM_IDS[:3], model, ITEM_IDS, tokens, target_tokens,
                          "ndcg@3")
    # the champion knows items 10..50 only: row 0 (input 10..50, target 60) has no shared
    # target, and a row of 60..100 with target 10 has no shared input left
    champion = _cycle_model(ITEM_IDS[:5])
    rows = np.array([0, 5])
    with pytest.raises(ValueError, match="no validation row"):
        rescore_next_item(champion, ITEM_IDS[:5], model, ITEM_IDS, tokens[rows],
                          target_tokens[rows], "ndcg@3")
