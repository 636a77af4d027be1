"""The training loop: history, early stopping with best restore, resume, guards."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recsys_pipeline.evaluation.rating import predict
from recsys_pipeline.models.bias import BiasModel
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.training.checkpoint import load_checkpoint
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.loop import TrainConfig, _batch_bounds, fit
from recsys_pipeline_tests.models.planted import Planted

TIMING = ("samples_per_s", "seconds")


def _mlp() -> MLPModel:  # dropout on purpose: resume must also restore the dropout stream
    return MLPModel(48, 30, MLPConfig(user_dim=8, item_dim=8, hidden=(16,), dropout=0.2))


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def test_history_and_callback(planted: Planted) -> None:
    seen: list[tuple[int, dict]] = []
    config = TrainConfig(epochs=3, batch_size=128, lr=0.01, device="cpu")
    result = fit(_mlp(), planted.train, planted.valid, config, on_epoch=lambda e, m: seen.append(
        (e, m)))
    assert [e for e, _ in seen] == [1, 2, 3] == [h["epoch"] for h in result.history]
    keys = {"train_loss", "valid_loss", "valid_rmse", "valid_mae", *TIMING}
    assert all(set(m) == keys for _, m in seen)
    h = result.history[-1]
    assert h["valid_rmse"] == pytest.approx(h["valid_loss"] ** 0.5)
    assert result.best_metric == min(x["valid_rmse"] for x in result.history)


def test_resume_reproduces_straight_run(planted: Planted, tmp_path) -> None:
    base = TrainConfig(epochs=4, batch_size=100, lr=0.01, patience=None, device="cpu")
    cfg_a = dataclasses.replace(base, checkpoint_path=str(tmp_path / "a.pt"))
    full = fit(_mlp(), planted.train, planted.valid, cfg_a)

    cfg_b = dataclasses.replace(base, checkpoint_path=str(tmp_path / "b.pt"))
    first = fit(_mlp(), planted.train, planted.valid, dataclasses.replace(cfg_b, epochs=2))
    torch.rand(7)  # global RNG use between runs must not matter
    second = fit(_mlp(), planted.train, planted.valid, cfg_b)  # a fresh model, resumed from disk
    assert len(first.history) == 2
    assert _without_timing(second.history) == _without_timing(full.history)
    assert second.best_epoch == full.best_epoch
    last_a, last_b = load_checkpoint(cfg_a.checkpoint_path), load_checkpoint(cfg_b.checkpoint_path)
    for name, tensor in last_a["model"].items():
        assert torch.equal(tensor, last_b["model"][name]), name


def test_resume_final_weights_identical(planted: Planted, tmp_path) -> None:
    base = TrainConfig(epochs=4, batch_size=100, lr=0.01, patience=None, device="cpu",
                       restore_best=False)
    straight, resumed = _mlp(), _mlp()
    fit(straight, planted.train, planted.valid, base)
    cfg = dataclasses.replace(base, checkpoint_path=str(tmp_path / "c.pt"))
    fit(_mlp(), planted.train, planted.valid, dataclasses.replace(cfg, epochs=2))
    fit(resumed, planted.train, planted.valid, cfg)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_early_stopping_restores_best_epoch() -> None:
    # valid ratings are independent noise: a big MF memorises train and valid RMSE climbs
    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 20, (300,), generator=g), torch.randint(0, 15, (300,),
                                                                            generator=g)
    ratings = torch.randint(1, 6, (300,), generator=g).float()
    train = RatingData(users[:200], items[:200], ratings[:200])
    valid = RatingData(users[200:], items[200:], ratings[200:])
    model = MFModel(20, 15, MFConfig(n_factors=16, init_std=0.3))
    config = TrainConfig(epochs=60, batch_size=32, lr=0.05, patience=3, device="cpu")
    result = fit(model, train, valid, config)
    rmses = [h["valid_rmse"] for h in result.history]
    assert result.stopped_early and len(rmses) == result.best_epoch + 3 < 60
    assert result.best_epoch == 1 + rmses.index(min(rmses))
    restored = (predict(model, valid).double() - valid.ratings).pow(2).mean().sqrt()
    assert float(restored) == pytest.approx(result.best_metric, rel=1e-6)
    assert float(restored) < rmses[-1]


def test_resume_rejects_changed_config(planted: Planted, tmp_path) -> None:
    config = TrainConfig(epochs=1, batch_size=256, lr=0.01, device="cpu",
                         checkpoint_path=str(tmp_path / "c.pt"))
    fit(_mlp(), planted.train, planted.valid, config)
    with pytest.raises(ValueError, match=r"c.pt: cannot resume, config differs.*'lr'"):
        fit(_mlp(), planted.train, planted.valid, dataclasses.replace(config, lr=0.1))


def test_global_rng_untouched_and_amp_ignored_on_cpu(planted: Planted) -> None:
    config = TrainConfig(epochs=2, batch_size=128, lr=0.01, device="cpu")
    model, other = _mlp(), _mlp()  # (nn layer constructors draw from the global RNG)
    before = torch.get_rng_state()
    plain = fit(model, planted.train, planted.valid, config)
    assert torch.equal(torch.get_rng_state(), before)
    if not torch.cuda.is_available():
        amp = fit(other, planted.train, planted.valid, dataclasses.replace(config, amp=True))
        assert _without_timing(amp.history) == _without_timing(plain.history)


def test_fit_runs_on_the_device(planted: Planted, device: torch.device) -> None:
    model = MFModel(48, 30, MFConfig(n_factors=4))
    config = TrainConfig(epochs=2, batch_size=128, lr=0.01, device=device.type,
                         amp=device.type == "cuda")
    result = fit(model, planted.train, planted.valid, config)
    assert result.device.startswith(device.type)
    assert model.user_factors.weight.device.type == device.type
    assert model.score_all(torch.arange(3, device=device)).shape == (3, 30)


def test_guards(planted: Planted) -> None:
    with pytest.raises(ValueError, match="BiasModel is not gradient-trained"):
        fit(BiasModel(48, 30), planted.train, planted.valid, TrainConfig(device="cpu"))
    bad = RatingData.from_arrays([0, 60], [1, 2], [3.0, 4.0])
    with pytest.raises(ValueError, match="'user_idx' has index 60 >= n=48"):
        fit(_mlp(), bad, planted.valid, TrainConfig(device="cpu"))
    with pytest.raises(ValueError, match="diverged at epoch 1"):
        fit(MFModel(48, 30), planted.train, planted.valid,
            TrainConfig(optimizer="sgd", lr=1e6, batch_size=32, device="cpu"))


@pytest.mark.parametrize("kwargs", [
    {"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"optimizer": "lbfgs"}, {"patience": 0},
    {"monitor": "valid_auc"}, {"mode": "up"}, {"amp_dtype": "fp8"},
])
def test_invalid_train_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_batch_bounds_never_leave_a_single_row() -> None:
    assert _batch_bounds(9, 4) == [(0, 4), (4, 9)]  # 8..9 would be one row: merged
    assert _batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert _batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert _batch_bounds(1, 4) == [(0, 1)]


def test_rerun_of_a_finished_checkpoint_trains_nothing(planted: Planted, tmp_path) -> None:
    config = TrainConfig(epochs=2, batch_size=128, lr=0.01, device="cpu",
                         checkpoint_path=str(tmp_path / "c.pt"))
    first_model, again_model = _mlp(), _mlp()
    first = fit(first_model, planted.train, planted.valid, config)
    calls: list[int] = []
    again = fit(again_model, planted.train, planted.valid, dataclasses.replace(config, patience=9),
                on_epoch=lambda e, m: calls.append(e))
    assert calls == [] and again.history == first.history
    for name, tensor in first_model.state_dict().items():
        assert torch.equal(tensor, again_model.state_dict()[name]), name  # best weights restored
