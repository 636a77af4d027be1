"""Save/load format, config round trips and config validation."""

from __future__ import annotations

import json

import pytest
import torch

from recsys_pipeline.models.base import (
    CONFIG_FILE,
    STATE_FILE,
    config_from_dict,
    config_to_dict,
    load_model,
)
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig


def test_config_round_trip_keeps_tuples() -> None:
    config = MLPConfig(hidden=(7, 5), norm="layer")
    assert config_from_dict(MLPConfig, json.loads(json.dumps(config_to_dict(config)))) == config


def test_save_writes_json_and_state_only(tmp_path) -> None:
    model = MFModel(4, 3, MFConfig(n_factors=2))
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CONFIG_FILE, STATE_FILE]
    meta = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert meta["family"] == "mf" and meta["n_users"] == 4 and meta["config"]["n_factors"] == 2
    state = torch.load(tmp_path / "m" / STATE_FILE, weights_only=True)
    assert set(state) == set(model.state_dict())


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_model(tmp_path / "missing")
    MFModel(4, 3).save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a MFModel, not a BiasModel"):
        BiasModel.load(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    meta["family"] = "os"
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="field 'family'='os'"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("make", [
    lambda: MFConfig(n_factors=0),
    lambda: MFConfig(rating_min=5.0, rating_max=1.0),
    lambda: MLPConfig(norm="group"),
    lambda: MLPConfig(dropout=1.0),
    lambda: NeuMFConfig(hidden=(8, 0)),
    lambda: DeepFMConfig(embedding_dim=0),
    lambda: BiasConfig(damping_user=-1.0),
    lambda: BiasConfig(iterations=0),
])
def test_invalid_configs_raise(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_model_rejects_wrong_config_type() -> None:
    with pytest.raises(ValueError, match="MFModel needs a MFConfig, got MLPConfig"):
        MFModel(3, 3, MLPConfig())  # type: ignore[arg-type]
