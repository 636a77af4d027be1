"""RMSE, MAE and FCP on hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_pipeline.evaluation.rating import fcp, mae, predict, rmse
from recsys_pipeline.training.data import RatingData


def test_rmse_and_mae_by_hand() -> None:
    # errors [1, 0, −2]: MSE = (1 + 0 + 4) / 3 = 5/3, RMSE = √(5/3) = 1.29099; MAE = 3/3 = 1
    pred, target = torch.tensor([3.0, 4.0, 1.0]), torch.tensor([2.0, 4.0, 3.0])
    assert rmse(pred, target) == pytest.approx((5 / 3) ** 0.5)
    assert mae(pred, target) == pytest.approx(1.0)


def test_rating_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        rmse(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="empty"):
        mae(torch.ones(0), torch.ones(0))


# user 0: r = [5, 3, 1], r̂ = [4.5, 3.5, 3.6]
#   (5>3): 4.5>3.5 concordant; (5>1): 4.5>3.6 concordant; (3>1): 3.5>3.6? no → discordant
#   n_c = 2, n_d = 1
# user 1: r = [4, 4, 2], r̂ = [3, 2, 2]
#   (4,4) tied truth: skipped; (4a>2): 3>2 concordant; (4b>2): 2>2? tie → discordant
#   n_c = 1, n_d = 1
# user 2: one rating, no pair.
# pooled (Koren) = (2 + 1) / (3 + 2) = 0.6;  per-user mean = (2/3 + 1/2) / 2 = 7/12
FCP_USERS = [0, 0, 0, 1, 1, 1, 2]
FCP_TRUE = [5.0, 3.0, 1.0, 4.0, 4.0, 2.0, 3.0]
FCP_PRED = [4.5, 3.5, 3.6, 3.0, 2.0, 2.0, 1.0]


@pytest.mark.parametrize(("average", "expected"), [("pooled", 0.6), ("user", 7 / 12)])
def test_fcp_by_hand_in_any_row_order(average: str, expected: float) -> None:
    order = torch.tensor([6, 3, 0, 5, 1, 4, 2])  # rows interleaved across users
    users = torch.tensor(FCP_USERS)[order]
    pred, true = torch.tensor(FCP_PRED)[order], torch.tensor(FCP_TRUE)[order]
    assert fcp(users, pred, true, average=average) == pytest.approx(expected)


def test_fcp_small_chunks_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys_pipeline.evaluation.rating as rating

    monkeypatch.setattr(rating, "FCP_PAIR_BUDGET", 1)  # every user in its own padded block
    users, pred, true = map(torch.tensor, (FCP_USERS, FCP_PRED, FCP_TRUE))
    assert fcp(users, pred, true) == pytest.approx(0.6)


def test_fcp_without_comparable_pairs_raises() -> None:
    with pytest.raises(ValueError, match="no user has two test items with different ratings"):
        fcp(torch.tensor([0, 0, 1]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 4.0, 2.0]))


class _Echo(nn.Module):
    """score = user + item / 10, with a dropout that must be off during predict."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.9)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.drop(users.float() + items.float() / 10)


def test_predict_batches_in_eval_mode_and_restores_mode() -> None:
    model = _Echo().train()
    data = RatingData.from_arrays([0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [1.0] * 5)
    out = predict(model, data, batch_size=2)
    torch.testing.assert_close(out, torch.tensor([0.1, 1.2, 2.3, 3.4, 4.5]))
    assert model.training
