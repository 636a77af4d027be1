"""IdScorer: scores pairs of original ids, rejects unknown ids, saves and loads itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.serving.id_scorer import IdScorer
from recsys_pipeline_tests.serving.planted import ITEM_IDS, USER_IDS, World


@pytest.mark.parametrize("family", ["mf", "deepfm"])
def test_predict_is_the_model_on_mapped_ids(world: World, family: str) -> None:
    model = world.models[family]
    scorer = IdScorer(model, world.maps, batch_size=4)
    users, items = np.array([3, 0, 39, 7, 7]), np.array([63, 0, 5, 9, 10])
    got = scorer.predict(USER_IDS[users], ITEM_IDS[items])
    with torch.no_grad():
        want = model.score(torch.from_numpy(users), torch.from_numpy(items)).numpy()
    assert got.dtype == np.float32
    # batches of 4 against one batch of 5: a matmul may round the last bit differently
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    as_floats = scorer.predict(USER_IDS[users].astype(float), ITEM_IDS[items].astype(float))
    np.testing.assert_array_equal(as_floats, got)


@pytest.mark.parametrize(("users", "items", "message"), [
    ([USER_IDS[0], 5], [ITEM_IDS[0], ITEM_IDS[1]], r"unknown user_id \[5\]: not in the id map"),
    ([USER_IDS[0]], [8], r"unknown item_id \[8\]: not in the id map"),
    ([USER_IDS[0]], [ITEM_IDS[0], ITEM_IDS[1]], "1 user ids but 2 item ids"),
    ([1000.5], [ITEM_IDS[0]], "must hold integer ids"),
    (["a"], [ITEM_IDS[0]], "must hold integer ids"),
])
def test_rejects(world: World, users: list, items: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IdScorer(world.models["mf"], world.maps).predict(np.array(users), np.array(items))


def test_save_load_round_trip(world: World, tmp_path: Path) -> None:
    scorer = IdScorer(world.models["neumf"], world.maps)
    scorer.save(tmp_path / "scorer")
    assert sorted(p.name for p in (tmp_path / "scorer").iterdir()) == ["id_maps", "model"]
    loaded = IdScorer.load(tmp_path / "scorer")
    table = pa.table({S.USER_ID: pa.array(USER_IDS[[1, 2, 3]], S.ID_TYPE),
                      S.ITEM_ID: pa.array(ITEM_IDS[[4, 5, 6]], S.ID_TYPE)})
    np.testing.assert_array_equal(loaded.predict_table(table).column("score").to_numpy(),
                                  scorer.predict(USER_IDS[[1, 2, 3]], ITEM_IDS[[4, 5, 6]]))
    with pytest.raises(FileNotFoundError, match="config.json"):
        IdScorer.load(tmp_path / "missing")


def test_model_and_maps_must_agree(world: World) -> None:
    from recsys_pipeline.models.mf import MFModel

    with pytest.raises(ValueError, match="n_users=2, n_items=3 but the id maps have 40 users"):
        IdScorer(MFModel(2, 3), world.maps)
