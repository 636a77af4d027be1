"""The shared optimizer builder: fused kernels where torch has them, the same updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_pipeline.training.optim import OPTIMIZERS, build_optimizer


def _steps(optimizer_name: str, fused: bool, steps: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    emb = nn.Embedding(50, 8)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(50, 8, generator=gen))
    if fused:
        opt = build_optimizer(emb.parameters(), optimizer_name, lr=1e-2, weight_decay=0.01)
        assert opt.defaults["fused"] is True  # CPU has fused Adam, AdamW and SGD kernels
    else:
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": torch.optim.SGD}[optimizer_name]
        extra = {"momentum": 0.9} if optimizer_name == "sgd" else {}
        opt = cls(emb.parameters(), lr=1e-2, weight_decay=0.01, foreach=False, **extra)
    for _ in range(steps):
        rows = torch.randint(0, 50, (16,), generator=gen)
        loss = (emb(rows) ** 2).sum()  # only the batch's rows get a non-zero gradient
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return emb.weight.detach()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_optimizer_makes_the_plain_updates(name: str) -> None:
    start = _steps(name, fused=False, steps=0)
    fused, plain = _steps(name, fused=True), _steps(name, fused=False)
    assert not torch.equal(fused, start)  # it trained
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_build_optimizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="optimizer='rmsprop' must be one of"):
        build_optimizer(nn.Linear(2, 2).parameters(), "rmsprop", lr=1e-3)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen.parameters(), "adam", lr=1e-3)
