"""Rating models take the ingested release's rating range (whole stars 1..5 on ml-1m)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recsys_pipeline.assets.train import on_release_scale
from recsys_pipeline.models.autoencoder import AutoEncoderConfig
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.popularity import PopularityConfig
from recsys_pipeline.resources import LakeResource


def _record(lake: Path, low: float, step: float) -> LakeResource:
    (lake / "raw").mkdir(parents=True, exist_ok=True)
    (lake / "raw" / "movielens_release.json").write_text(json.dumps(
        {"name": "ml-1m", "rating_scale": {"min": low, "max": 5.0, "step": step}}))
    return LakeResource(root=str(lake))


def test_whole_star_release_bounds_predictions(tmp_path: Path) -> None:
    lake = _record(tmp_path, 1.0, 1.0)
    mf = on_release_scale(MFConfig(n_factors=2), lake)
    assert (mf.rating_min, mf.rating_max) == (1.0, 5.0)
    deepfm = on_release_scale(DeepFMConfig(), lake)
    assert (deepfm.rating_min, deepfm.rating_max) == (1.0, 5.0)
    assert on_release_scale(PopularityConfig(), lake) == PopularityConfig()  # no range
    auto = on_release_scale(AutoEncoderConfig(), lake)  # its rating clamp
    assert (auto.rating_min, auto.rating_max) == (1.0, 5.0)
    model = MFModel(3, 4, mf).eval()
    with torch.no_grad():
        model.user_factors.weight.fill_(-3.0)
        model.item_factors.weight.fill_(3.0)
        assert float(model.score_all(torch.arange(3)).min()) == 1.0  # not 0.5


def test_half_star_release_and_no_release_keep_the_defaults(tmp_path: Path) -> None:
    assert on_release_scale(MFConfig(), _record(tmp_path / "a", 0.5, 0.5)).rating_min == 0.5
    assert on_release_scale(MFConfig(), LakeResource(root=str(tmp_path / "b"))) == MFConfig()
