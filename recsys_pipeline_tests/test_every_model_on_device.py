"""Every model family trains (or fits) and scores on the ``device`` fixture's device.

The cuda cases skip where there is no GPU (CI). On the GPU machine, which has torch but no
dagster or mlflow, this module imports the core only, so there::

    PYTHONPATH=. python3 -m pytest -q recsys_pipeline_tests/test_every_model_on_device.py

confirms each family keeps its weights, data and scores on CUDA (bf16 autocast for the
gradient-trained ones, as the GPU benchmarks run them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.cooccurrence import CooccurrenceModel
from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.models.neumf import NeuMFConfig, NeuMFModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.models.sasrec import SASRecConfig, SASRecModel
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.training.loop import TrainConfig, fit
from recsys_pipeline.training.ranking_data import CSRTensors, pairs_from_csr, training_sequences
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.models.planted import Planted
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, Blocks, Cycle

EPOCHS = 6


def on(model: nn.Module, device: torch.device) -> bool:
    """Every parameter and buffer of ``model`` lives on ``device``'s type."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return all(t.device.type == device.type for t in tensors)


def check_learned(history: list[dict[str, float]], device_name: str, device: torch.device,
                  epochs: int = EPOCHS) -> None:
    assert device_name.startswith(device.type)
    losses = [h["train_loss"] for h in history]
    assert len(losses) == epochs and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses  # it learns, not merely runs


RATING_MODELS: dict[str, Callable[[], nn.Module]] = {
    "mf": lambda: MFModel(48, 30, MFConfig(n_factors=8)),
    "mlp": lambda: MLPModel(48, 30, MLPConfig()),
    "neumf": lambda: NeuMFModel(48, 30, NeuMFConfig()),
    "deepfm": lambda: DeepFMModel(48, 30, DeepFMConfig()),
}


@pytest.mark.parametrize("name", sorted(RATING_MODELS))
def test_rating_model_trains_and_scores_on_device(name: str, planted: Planted,
                                                  device: torch.device) -> None:
    model = RATING_MODELS[name]()
    result = fit(model, planted.train, planted.valid, TrainConfig(
        epochs=EPOCHS, batch_size=128, lr=0.01, device=device.type, patience=None,
        amp=device.type == "cuda"))
    check_learned(result.history, result.device, device)
    assert on(model, device)
    scores = model.score_all(torch.arange(5, device=device))
    assert scores.device.type == device.type and scores.shape == (5, 30)
    assert torch.isfinite(scores).all()


def test_closed_form_rating_baselines_fit_on_device(planted: Planted,
                                                    device: torch.device) -> None:
    train = planted.train.to(device)
    for model in (BiasModel.fit(train, 48, 30, BiasConfig()),
                  PopularityModel.fit(train, 48, 30)):
        assert on(model, device), type(model).__name__
        scores = model.score_all(torch.arange(5, device=device))
        assert scores.device.type == device.type and torch.isfinite(scores).all()


FOLD_IN_MODELS: dict[str, Callable[[], nn.Module]] = {
    "autoencoder": lambda: AutoEncoderModel(N_USERS, N_ITEMS, AutoEncoderConfig(
        hidden=(32, 8), dropout=0.2, unobserved_weight=0.2, constrained=True, refeed=True,
        clamp=False)),
    "multvae": lambda: MultVAEModel(N_USERS, N_ITEMS, MultVAEConfig(
        hidden=(32,), latent=8, total_anneal_steps=20)),
    "multdae": lambda: MultVAEModel(N_USERS, N_ITEMS, MultVAEConfig(
        hidden=(), latent=8, variational=False)),
}


def _ranking_config(device: torch.device, batch_size: int, epochs: int = EPOCHS
                    ) -> RankingTrainConfig:
    return RankingTrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-2, patience=None,
                              monitor="train_loss", mode="min", device=device.type,
                              amp=device.type == "cuda", seed=3)


@pytest.mark.parametrize("name", sorted(FOLD_IN_MODELS))
def test_fold_in_model_trains_and_scores_on_device(name: str, blocks: Blocks,
                                                   device: torch.device) -> None:
    model = FOLD_IN_MODELS[name]()
    result = fit_ranking(model, CSRTensors.from_scipy(blocks.train), None,
                         _ranking_config(device, 16))
    check_learned(result.history, result.device, device)
    assert on(model, device)
    folded = model.score_all_from(blocks.fold_in)  # held-out users, never trained on
    assert folded.device.type == device.type and folded.shape == (blocks.fold_in.shape[0],
                                                                  N_ITEMS)
    assert torch.isfinite(folded).all()
    assert model.score_all(torch.arange(4, device=device)).device.type == device.type


def test_ease_fits_and_scores_on_device(blocks: Blocks, device: torch.device) -> None:
    for float64 in (True, False):
        model = EASEModel.fit(blocks.train, EASEConfig(l2=1.0, float64=float64), device=device)
        assert on(model, device)
        folded = model.score_all_from(blocks.fold_in)
        assert folded.device.type == device.type and torch.isfinite(folded).all()


SEQUENCE_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "gru4rec-ce": lambda n: GRU4RecModel(n, GRU4RecConfig(embedding_dim=16, hidden=16)),
    "gru4rec-sampled-tied": lambda n: GRU4RecModel(n, GRU4RecConfig(
        embedding_dim=16, hidden=16, tied=True, loss="sampled", n_negatives=4)),
    "sasrec-ce": lambda n: SASRecModel(n, SASRecConfig(max_len=12, dim=16)),
    "sasrec-sampled": lambda n: SASRecModel(n, SASRecConfig(max_len=12, dim=16,
                                                            loss="sampled", n_negatives=4)),
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_sequence_model_trains_and_scores_on_device(name: str, cycle: Cycle,
                                                    device: torch.device) -> None:
    model = SEQUENCE_MODELS[name](cycle.n_vocab)
    result = fit_ranking(model, training_sequences(cycle.train), None,
                         _ranking_config(device, 32, epochs=20))
    check_learned(result.history, result.device, device, epochs=20)
    assert on(model, device)
    scores = model.score_next(torch.as_tensor(cycle.inputs, device=device))
    assert scores.device.type == device.type
    assert scores.shape == (cycle.inputs.shape[0], cycle.n_vocab + 1)
    assert torch.isfinite(scores[:, 1:]).all()
    # the planted cycle: the true next token is now the top item for most rows
    hits = (scores.argmax(1).cpu().numpy() == cycle.targets).mean()
    assert hits > 0.5, hits


def test_cooccurrence_scores_on_device(cycle: Cycle, device: torch.device) -> None:
    model = CooccurrenceModel.fit(cycle.train, cycle.n_vocab).to(device)
    assert on(model, device)
    scores = model.score_next(torch.as_tensor(cycle.inputs, device=device))
    assert scores.device.type == device.type
    assert torch.isfinite(scores[:, 1:]).all()  # column 0, the padding token, is -inf


def test_two_tower_trains_and_scores_on_device(blocks: Blocks, device: torch.device) -> None:
    model = TwoTowerModel(N_USERS, N_ITEMS, TwoTowerConfig(dim=16, seed=1))
    result = fit_ranking(model, pairs_from_csr(blocks.train), None,
                         _ranking_config(device, 64))
    check_learned(result.history, result.device, device)
    assert on(model, device)
    scores = model.score_all(torch.arange(4, device=device))
    assert scores.device.type == device.type and torch.isfinite(scores).all()
    assert model.item_embeddings().device.type == device.type
