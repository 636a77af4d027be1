"""Checkpoint files: atomic write, weights-only read, resume guard."""

from __future__ import annotations

import math

import pytest
import torch

from recsys_pipeline.training.checkpoint import (
    FORMAT_VERSION,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)


def _checkpoint() -> dict:
    return {
        "format_version": FORMAT_VERSION, "epoch": 2, "model": {"w": torch.arange(3.0)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
        "best_model": None, "best_metric": math.inf, "best_epoch": 1, "bad_epochs": 1,
        "stopped": False, "history": [{"epoch": 1, "valid_rmse": 0.9}],
        "config": {"lr": 0.1, "epochs": 4}, "model_config": {"n_factors": 2},
        "rng": {"cpu": torch.get_rng_state()},
    }


def test_round_trip_weights_only_and_no_temp_files(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "run" / "ckpt.pt", _checkpoint())
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["history"] == [{"epoch": 1, "valid_rmse": 0.9}]
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)


def test_missing_file_and_keys_raise(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = _checkpoint()
    del bad["rng"]
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['rng'\]"):
        save_checkpoint(tmp_path / "x.pt", bad)
    torch.save({"epoch": 1}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt: checkpoint lacks key"):
        load_checkpoint(tmp_path / "old.pt")


def test_resume_guard_names_the_changed_field() -> None:
    ckpt = _checkpoint()
    check_resumable("c.pt", ckpt, {"lr": 0.1, "epochs": 10}, {"n_factors": 2})  # epochs free
    with pytest.raises(ValueError, match=r"c.pt: cannot resume, config differs.*'lr': \(0.1, 0.2"):
        check_resumable("c.pt", ckpt, {"lr": 0.2, "epochs": 4}, {"n_factors": 2})
    with pytest.raises(ValueError, match="model_config differs"):
        check_resumable("c.pt", ckpt, {"lr": 0.1, "epochs": 4}, {"n_factors": 3})
