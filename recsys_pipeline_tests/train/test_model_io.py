"""ModelIOManager: state_dict + JSON folders replaced atomically; never pickled objects."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import torch

from recsys_pipeline.model_io import ModelIOManager, replace_dir
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.resources import LakeResource

KEY = dg.AssetKey(["models", "mf_model"])


def test_write_replace_and_load(tmp_lake) -> None:
    manager = ModelIOManager(lake=LakeResource(root=str(tmp_lake)))
    first, second = MFModel(5, 7, MFConfig(n_factors=2, seed=1)), MFModel(
        5, 7, MFConfig(n_factors=3, seed=2))
    for model in (first, second):
        manager.handle_output(dg.build_output_context(asset_key=KEY), model)
    folder = tmp_lake / "models" / "mf_model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "state_dict.pt",
                                                        "trained_on.json"]
    assert json.loads((folder / "config.json").read_text())["config"]["n_factors"] == 3
    assert not [p for p in (tmp_lake / "models").iterdir() if p.name.startswith(".")]
    # plain tensors only: loadable with weights_only=True
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    assert torch.equal(state["item_factors.weight"], second.item_factors.weight)
    loaded = manager.load_input(dg.build_input_context(asset_key=KEY))
    users = torch.arange(5)
    with torch.no_grad():
        assert torch.equal(loaded.score_all(users), second.eval().score_all(users))


def test_a_failed_write_keeps_the_old_model(tmp_lake, monkeypatch) -> None:
    manager = ModelIOManager(lake=LakeResource(root=str(tmp_lake)))
    manager.handle_output(dg.build_output_context(asset_key=KEY), MFModel(5, 7))
    monkeypatch.setattr(MFModel, "save", lambda self, d: (_ for _ in ()).throw(
        OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        manager.handle_output(dg.build_output_context(asset_key=KEY), MFModel(5, 7))
    models = tmp_lake / "models"
    assert sorted(p.name for p in models.iterdir()) == ["mf_model"]
    assert (models / "mf_model" / "state_dict.pt").is_file()
    with pytest.raises(TypeError, match="expected a RatingModel"):
        manager.handle_output(dg.build_output_context(asset_key=KEY), {"weights": 1})


def test_replace_dir_moves_a_folder_over_another(tmp_path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("new")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "b.txt").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["a.txt"]
