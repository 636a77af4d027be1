"""The serving CLI commands and ``serving.lake_models`` on a lake the whole pipeline built."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.cli import build_parser, main
from recsys_pipeline.serving import lake_models as lm
from recsys_pipeline.serving.check_user import check_user
from recsys_pipeline.serving.recommend import recommend
from recsys_pipeline_tests.pipeline_lake import build_pipeline_lake

COMMANDS = ("recommend", "check-user", "similar", "new-user")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving") / "lake"
    build_pipeline_lake(root)
    return root


def _run(lake: Path, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["--lake", str(lake), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _column(out: str, position: int) -> list[int]:
    """Integer column ``position`` of the printed table (rows between the dashes and the
    "(n rows)" line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("("))
    return [int(line.split()[position]) for line in lines[start:end]]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--run-id" in out


@pytest.mark.parametrize(("command", "default"), [
    ("recommend", "the MLflow champion that ranks best, by validation NDCG@10 on the per-user "
                  "split; with --by-embedding, of the MLflow champions with item embeddings"),
    ("new-user", "the MLflow champion that ranks best"),
    ("export", "the MLflow champion that ranks best"),
    ("check-user", "the MLflow champion with the best validation RMSE;"),
    ("similar", "of the MLflow champions with item embeddings (mf, mlp, neumf, deepfm, "
                "two_tower), the one that ranks best"),
    ("project", "of the MLflow champions with item embeddings"),
])
def test_model_help_names_the_commands_own_default(command, default, capsys, monkeypatch):
    """Each command's --model help names the champion that command serves by default (was:
    one text for all, naming check-user's rule in every command and the ranking champion in
    similar and project, which serve the best champion with item embeddings)."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no hyphen wrapped away
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    model_help = out.split("--model NAME")[-1].split("--run-id")[0]
    assert f"(default: {default}" in model_help
    assert "check-user" not in model_help
    if command == "recommend":
        by_embedding = out.split("--by-embedding")[-1].split("--model")[0]
        assert "(mf, mlp, neumf, deepfm, two_tower)" in by_embedding


def _rated(lake: Path, user_id: int, splits: tuple[str, ...]) -> set[int]:
    """Original item ids ``user_id`` rated in the given prepared splits."""
    out: set[int] = set()
    for split in splits:
        table = lm.load_split(lake, split)
        out |= set(table.filter(pc.equal(table.column(S.USER_ID), user_id))
                   .column(S.ITEM_ID).to_pylist())
    return out


def test_recommend_matches_core_and_skips_seen(lake, capsys):
    code, out, err = _run(lake, capsys, "recommend", "--user", "3", "-k", "5", "--model", "mf")
    assert code == 0, err
    assert out.startswith("model: mf_model (mf)")
    items = _column(out, 1)
    served = lm.resolve_model(lake, "mf_model")
    seen = lm.load_seen(lake, served.maps)
    expected = recommend(served.model, served.maps, lm.load_movies(lake), 3, 5, seen)
    assert items == expected.column(S.ITEM_ID).to_pylist() and len(items) == 5
    assert not set(items) & _rated(lake, 3, ("train", "valid", "test"))


@pytest.mark.parametrize("model", ["mf", "ease", "sasrec", "two_tower"])
def test_recommend_never_returns_a_held_out_rating(lake, capsys, model):
    """The list holds exactly the movies the user has not rated: held-out (valid / test)
    ratings are ratings too, so asking for every candidate leaves them all out."""
    served = lm.resolve_model(lake, model)
    known = set(served.maps.items.column(S.ITEM_ID).to_pylist())
    held_out = _rated(lake, 3, ("valid", "test"))
    assert held_out  # the check below would be empty otherwise
    rated = _rated(lake, 3, ("train", "valid", "test"))
    k = str(served.model.n_items)  # the whole unrated catalogue
    code, out, err = _run(lake, capsys, "recommend", "--user", "3", "-k", k, "--model", model)
    assert code == 0, err
    items = _column(out, 1)
    assert items and not set(items) & rated
    assert set(items) <= known - rated
    if model == "mf":  # its item space is the whole map
        assert set(items) == known - rated


def test_recommend_by_embedding_shows_the_full_models_verdict(lake, capsys):
    from recsys_pipeline.serving.similar import recommend_by_embedding

    code, out, err = _run(lake, capsys, "recommend", "--user", "3", "-k", "4", "--model", "mf",
                          "--by-embedding")
    assert code == 0, err
    assert "by user·item embedding similarity" in out and "model_rank" in out
    served = lm.resolve_model(lake, "mf")
    expected = recommend_by_embedding(served.model, served.maps, lm.load_movies(lake), 3, 4,
                                      lm.load_seen(lake, served.maps))
    assert _column(out, 1) == expected.column(S.ITEM_ID).to_pylist()
    assert _column(out, 0) == [1, 2, 3, 4]


def test_default_model_is_the_best_validated_champion(lake):
    from mlflow.tracking import MlflowClient

    uri = lm.default_tracking_uri(lake)
    client = MlflowClient(uri, uri)
    rmse, ndcg = {}, {}
    for registered in client.search_registered_models():
        version = client.get_model_version(registered.name, registered.aliases["champion"])
        run = client.get_run(version.run_id)
        name = registered.name.removeprefix("recsys-") + "_model"
        if "best_valid_rmse" in run.data.metrics:
            rmse[name] = run.data.metrics["best_valid_rmse"]
        if run.data.tags.get("ranking.protocol") in (None, "per_user_topk"):
            ndcg[name] = run.data.metrics["best_valid_ndcg_at_10"]
    assert len(rmse) == 6  # every rating family but popularity (the rating autoencoder too)
    assert set(ndcg) == {*rmse, "popularity_model", "two_tower_model"}  # one split, comparable
    assert lm.champion_model_name(lake, by="rmse") == min(rmse, key=rmse.get)
    assert lm.resolve_model(lake, by="rmse").name == min(rmse, key=rmse.get)
    assert lm.champion_model_name(lake) == max(ndcg, key=ndcg.get)
    assert lm.resolve_model(lake).name == max(ndcg, key=ndcg.get)
    with pytest.raises(ValueError, match="by='ndcg' must be one of"):
        lm.champion_model_name(lake, by="ndcg")


def test_a_two_tower_champion_is_served_from_its_run(lake, capsys):
    """Two-tower's run holds its weights and the original ids of its indices: served from
    the run it equals the lake's model, with the lake's ids and titles."""
    from mlflow.tracking import MlflowClient

    uri = lm.default_tracking_uri(lake)
    client = MlflowClient(uri, uri)
    version = client.get_model_version("recsys-two_tower",
                                       client.get_registered_model("recsys-two_tower")
                                       .aliases["champion"])
    name, model, maps = lm.load_run(lake, version.run_id)
    folder, lake_maps = lm.load_lake_served(lake, "two_tower_model")
    assert name == "two_tower_model" and model.family == "two_tower"
    for key, value in folder.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert maps.users.equals(lake_maps.users) and maps.items.equals(lake_maps.items)
    code, out, err = _run(lake, capsys, "recommend", "--user", "3", "-k", "3", "--run-id",
                          version.run_id)
    assert code == 0, err
    assert f"from mlflow run {version.run_id}" in out and len(_column(out, 1)) == 3


def test_default_serves_the_champions_weights_not_a_kept_out_challenger(lake):
    from recsys_pipeline.models.base import save_model

    name = lm.champion_model_name(lake, by="rmse")  # a rating model: weights to perturb
    folder = lake / "models" / name
    original = {k: v.clone() for k, v in lm.load_lake_model(lake, name).state_dict().items()}
    challenger = lm.load_lake_model(lake, name)
    with torch.no_grad():  # a retrain the gate kept out wrote its weights to the lake folder
        for p in challenger.parameters():
            p.add_(1.0)
    save_model(challenger, folder)
    try:
        served = lm.resolve_model(lake, by="rmse")
        assert served.name == name and served.source.startswith("mlflow run ")
        for key, value in served.model.state_dict().items():
            torch.testing.assert_close(value, original[key], rtol=0, atol=0)
        assert served.maps.n_users == lm.load_maps(lake).n_users
    finally:
        restored = lm.load_lake_model(lake, name)
        restored.load_state_dict(original)
        save_model(restored, folder)


def test_seen_items_follow_the_served_maps_through_original_ids(lake):
    maps = lm.load_maps(lake)
    seen = lm.load_seen(lake, maps)
    user_idx = int(maps.to_user_idx(np.array([3]))[0])
    train = _rated(lake, 3, ("train",))
    every = _rated(lake, 3, ("train", "valid", "test"))
    assert every > train  # the held-out ratings count as seen as well
    expected = set(maps.to_item_idx(np.array(sorted(every))).tolist())
    got = seen.indices[seen.indptr[user_idx]:seen.indptr[user_idx + 1]]
    assert set(got.tolist()) == expected and len(got) == len(expected)


def test_default_model_without_mlflow_is_mf(lake, tmp_path):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert lm.champion_model_name(lake, missing) is None
    assert lm.resolve_model(lake, tracking_uri=missing).name == "mf_model"


def test_run_id_loads_the_logged_weights(lake, capsys):
    from mlflow.tracking import MlflowClient

    uri = lm.default_tracking_uri(lake)
    client = MlflowClient(uri, uri)
    version = client.get_model_version("recsys-mlp",
                                       client.get_registered_model("recsys-mlp").aliases["champion"])
    name, model = lm.load_run_model(lake, version.run_id)
    assert name == "mlp_model"
    lake_state = lm.load_lake_model(lake, "mlp").state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, lake_state[key], rtol=0, atol=0)
    code, out, err = _run(lake, capsys, "recommend", "--user", "1", "-k", "3",
                          "--run-id", version.run_id)
    assert code == 0, err
    assert f"from mlflow run {version.run_id}" in out.splitlines()[0]


def test_check_user_latest(lake, capsys):
    code, out, err = _run(lake, capsys, "check-user", "--user", "2", "-p", "3", "--latest",
                          "--model", "bias_model")
    assert code == 0, err
    served = lm.resolve_model(lake, "bias")
    check = check_user(served.model, served.maps, lm.load_movies(lake),
                       lm.load_split(lake, "test"), 2, 3, latest=True)
    assert _column(out, 0) == check.table.column(S.ITEM_ID).to_pylist()
    assert f"user  RMSE {check.user_rmse:.4f}" in out
    assert f"model RMSE {check.model_rmse:.4f}" in out


def test_similar_excludes_the_item(lake, capsys):
    code, out, err = _run(lake, capsys, "similar", "--item", "7", "-k", "4", "--model", "mf")
    assert code == 0, err
    items = _column(out, 1)
    assert len(items) == 4 and 7 not in items
    assert _column(out, 0) == [1, 2, 3, 4]
    support = lm.train_support(lake, lm.load_maps(lake))
    cut = int(np.sort(support)[-3])  # about three items have at least this many ratings
    code, out, err = _run(lake, capsys, "similar", "--item", "7", "-k", "4", "--model", "mf",
                          "--min-ratings", str(cut))
    assert code == 0, err
    maps = lm.load_maps(lake)
    kept = set(maps.to_item_ids(np.flatnonzero(support >= cut)).tolist()) - {7}
    assert set(_column(out, 1)) <= kept and len(_column(out, 1)) == min(4, len(kept))
    too_many = int(support.max()) + 1  # nobody qualifies: say so, not just an empty table
    code, out, err = _run(lake, capsys, "similar", "--item", "7", "--model", "mf",
                          "--min-ratings", str(too_many))
    assert code == 0, err
    idx7 = int(maps.to_item_idx(np.array([7]))[0])
    most = int(np.delete(support, idx7).max())
    assert f"no other movie has {too_many} or more training ratings (the most any has: " \
           f"{most}); lower --min-ratings" in out


@pytest.mark.parametrize(("args", "needle"), [
    (("recommend", "--user", "999", "--model", "mf"), "999"),
    (("recommend", "--user", "1", "--model", "nope"), "nope_model"),
    (("recommend", "--user", "1", "--model", "mf", "--run-id", "x"), "not both"),
    (("recommend", "--user", "1", "--run-id", "no-such-run"), "no-such-run"),
    (("similar", "--item", "1", "--model", "bias"), "no user/item embeddings"),
    (("check-user", "--user", "1", "-p", "0", "--model", "mf"), "p=0"),
    (("check-user", "--user", "999", "--model", "mf"), "user_id 999 has no rating in the test "
                                                       "split ("),
    (("next", "--after", "1", "--model", "mf"), "not a next-item model"),
    (("next", "--after", "9999,8888", "--model", "sasrec"), "nothing to go on"),
    (("next", "--after", "1", "-k", "0", "--model", "sasrec"), "-k 0"),
])
def test_errors_are_one_line_exit_2(lake, capsys, args, needle):
    code, out, err = _run(lake, capsys, *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("recsys-pipeline")]
    assert len(lines) == 1 and needle in lines[0]


def test_new_user_recommends_and_persists(lake, capsys, tmp_path):
    liked = np.arange(1, 21)
    csv = tmp_path / "me.csv"
    csv.write_text("movieId,rating\n" + "".join(f"{i},{5.0 if i <= 10 else 1.0}\n"
                                                  for i in liked))
    code, out, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "-k", "5",
                          "--model", "mf", "--persist")
    assert code == 0, err
    assert "new user: 20 ratings, fit by closed_form" in out
    items = _column(out, 1)
    assert len(items) == 5 and not set(items) & set(liked.tolist())
    stored = lake / "raw" / "new_users" / "user_31.csv"  # the tiny release has users 1..30
    assert f"stored as user_id 31: {stored}" in out
    lines = stored.read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp" and len(lines) == 21

    code, again, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "-k", "5",
                            "--model", "mf", "--persist")  # the same command again
    assert code == 0, err
    assert f"stored already (same ratings; nothing written) as user_id 31: {stored}" in again
    assert sorted(p.name for p in stored.parent.iterdir()) == ["user_31.csv"]
    assert "note:" not in again

    csv.write_text(csv.read_text().replace("20,1.0", "20,2.0"))  # one rating changed
    code, changed, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "--model", "mf",
                              "--persist")
    assert code == 0, err
    assert "stored as user_id 32" in changed
    assert (f"note: stored new user 31 ({stored}) rated 20 of these 20 movies; if that is the "
            "same person, delete or edit one of the two files") in changed
    (stored.parent / "user_32.csv").unlink()  # the other tests count the stored users


def test_new_user_too_few_ratings(lake, capsys, tmp_path):
    csv = tmp_path / "few.csv"
    csv.write_text("movieId,rating\n1,4.0\n2,3.0\n")
    code, _, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "--model", "mf")
    assert code == 2 and "new-user: error" in err
    assert not (lake / "raw" / "new_users" / "user_32.csv").exists()


def test_cli_and_lake_models_import_without_dagster_or_mlflow():
    import subprocess
    import sys

    code = ("import sys, recsys_pipeline.cli, recsys_pipeline.serving.lake_models\n"
            "print(sorted({'dagster', 'mlflow'} & {m.split('.')[0] for m in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_champion_lookup_gives_up_quickly_on_an_unreachable_server(monkeypatch, tmp_path):
    """MLflow's defaults retry a dead server for minutes; the lookup sets short retries (a
    user's own setting wins) and ends in one clear error naming the URI."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    seen = {}

    def fake_champions(uri):
        from mlflow.exceptions import MlflowException

        seen.update({k: os.environ.get(k) for k in lm.QUICK_MLFLOW_ENV})
        raise MlflowException("connection refused")

    monkeypatch.setattr(lm, "_champions", fake_champions)
    with pytest.raises(ValueError, match="cannot read the champions from MLflow at http://x:9"):
        lm.champion_model_name(tmp_path, "http://x:9")
    assert seen["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == lm.QUICK_MLFLOW_ENV[
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert seen["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored afterwards


def test_similar_and_project_default_to_a_champion_with_embeddings(monkeypatch, tmp_path):
    """After README's course filter popularity can rank best; similar items, projections and
    --by-embedding need embeddings, so they take the best champion that has them."""
    store = tmp_path / "mlflow.db"
    store.touch()
    found = [lm.Champion("popularity_model", "p", math.nan, 0.09),
             lm.Champion("ease_model", "e", math.nan, 0.08),
             lm.Champion("mf_model", "m", 0.9, 0.02),
             lm.Champion("two_tower_model", "t", math.nan, 0.05)]
    monkeypatch.setattr(lm, "_champions", lambda uri: found)
    uri = f"sqlite:///{store}"
    assert lm.champion_model_name(tmp_path, uri) == "popularity_model"
    assert lm.champion_model_name(tmp_path, uri, by="embeddings") == "two_tower_model"
    assert lm.champion_model_name(tmp_path, uri, by="rmse") == "mf_model"
    found[3] = lm.Champion("two_tower_model", "t", math.nan, math.nan)
    assert lm.champion_model_name(tmp_path, uri, by="embeddings") == "mf_model"
    found.append(lm.Champion("tuned_model", "u", 0.95, 0.03, family="mlp"))  # by its family
    assert lm.champion_model_name(tmp_path, uri, by="embeddings") == "tuned_model"


def test_new_user_timestamps_order_a_sequence_model_and_are_stored(lake, capsys, tmp_path):
    rng = np.random.default_rng(4)
    items, times = rng.permutation(np.arange(1, 41))[:20], 1_600_000_000 + 3600 * np.arange(20)
    rows = [f"{i},4.0,{t}\n" for i, t in zip(items, times, strict=True)]
    lists = []
    for name, order in (("sorted", np.arange(20)), ("shuffled", rng.permutation(20))):
        csv = tmp_path / f"{name}.csv"
        csv.write_text("movieId,rating,timestamp\n" + "".join(rows[j] for j in order))
        code, out, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "-k", "5",
                              "--model", "sasrec")
        assert code == 0, err
        lists.append(_column(out, 1))
    assert lists[0] == lists[1] and len(lists[0]) == 5  # the timestamps set the order

    newest_first = tmp_path / "reversed.csv"  # file order alone would give another input
    newest_first.write_text("movieId,rating\n" + "".join(r.rsplit(",", 1)[0] + "\n"
                                                         for r in rows[::-1]))
    code, out, _ = _run(lake, capsys, "new-user", "--ratings", str(newest_first), "-k", "5",
                        "--model", "sasrec")
    assert code == 0 and _column(out, 1) != lists[0]

    code, out, err = _run(lake, capsys, "new-user", "--ratings", str(tmp_path / "shuffled.csv"),
                          "--model", "mf", "--persist")
    assert code == 0, err
    stored = Path(out.split("stored as user_id ")[1].split(": ", 1)[1].strip())
    lines = stored.read_text().splitlines()[1:]
    assert sorted(int(line.split(",")[3]) for line in lines) == times.tolist()
    stored.unlink()  # other tests of the module count the stored users


def test_new_user_ratings_follow_the_ingested_release_scale(lake, capsys, tmp_path):
    """On a whole-star release (ml-1m, ml-100k) half stars are refused up front: stored,
    they would fail every later ingest."""
    import json

    record = lake / "raw" / "movielens_release.json"
    saved = record.read_text()
    described = json.loads(saved)
    described["rating_scale"] = {"min": 1.0, "max": 5.0, "step": 1.0}
    record.write_text(json.dumps(described))
    try:
        csv = tmp_path / "half.csv"
        csv.write_text("movieId,rating\n" + "".join(f"{i},{3.5 if i == 7 else 4.0}\n"
                                                      for i in range(1, 21)))
        code, _, err = _run(lake, capsys, "new-user", "--ratings", str(csv), "--model", "mf",
                            "--persist")
        assert code == 2 and "line 8: rating 3.5 is off the scale 1..5 in steps of 1" in err
        assert not list((lake / "raw" / "new_users").glob("user_*.csv")) or all(
            "3.5" not in p.read_text() for p in (lake / "raw" / "new_users").glob("*.csv"))
    finally:
        record.write_text(saved)


def test_champions_of_another_release_are_not_served_by_default(lake, capsys):
    """After ingesting another release (without retraining) the champions' ids would mean
    other users and movies: the default refuses, and so does a named lake model."""
    import json

    record = lake / "raw" / "movielens_release.json"
    saved = record.read_text()
    trained_on = json.loads(saved)["name"]
    record.write_text(json.dumps({**json.loads(saved), "name": "ml-1m"}))
    try:
        code, _, err = _run(lake, capsys, "recommend", "--user", "1", "-k", "3")
        assert code == 2
        assert (f"the champions were trained on {trained_on} but the lake holds ml-1m "
                "(raw/movielens_release.json)") in err and "full_pipeline_job" in err
        code, out, err = _run(lake, capsys, "recommend", "--user", "1", "-k", "3", "--model",
                              "mf")  # its lake folder was trained on that release too
        assert code == 2 and "models/mf_model was trained on" in err
    finally:
        record.write_text(saved)
    code, out, _ = _run(lake, capsys, "recommend", "--user", "1", "-k", "3")
    assert code == 0 and "from mlflow run" in out


def test_a_lake_model_is_not_served_on_data_it_was_not_trained_on(lake, tmp_path, capsys):
    # the lake folder's model translates ids through the lake's current maps: after another
    # release is ingested, or prepare_job runs again, those would name other users/movies
    import json
    import shutil

    import pyarrow.parquet as pq

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    trained_on = json.loads((copy / "models" / "mf_model" / lm.TRAINED_ON_FILE).read_text())
    assert trained_on == lm.lake_data_signature(copy) and trained_on["release"]
    assert _run(copy, capsys, "recommend", "--user", "3", "--model", "mf")[0] == 0

    record = copy / "raw" / "movielens_release.json"
    original = record.read_text()
    record.write_text(json.dumps({**json.loads(original), "name": "ml-1m"}))
    code, _, err = _run(copy, capsys, "recommend", "--user", "3", "--model", "mf")
    assert code == 2 and f"models/mf_model was trained on {trained_on['release']}, but the " \
        "lake now holds ml-1m" in err
    record.write_text(original)

    users = pq.read_table(copy / "prepared" / "user_map.parquet")  # same size, other ids
    shifted = users.set_column(1, S.USER_ID, pc.add(users.column(S.USER_ID), 1000))
    pq.write_table(shifted, copy / "prepared" / "user_map.parquet")
    code, _, err = _run(copy, capsys, "similar", "--item", "1", "--model", "mf")
    assert code == 2 and "models/mf_model was trained on other prepared data" in err


def test_check_user_of_a_user_the_split_lacks_names_the_split(lake, tmp_path, capsys):
    """A user with lake ratings but none in the split (a stored new user ingested after
    prepare_job ran) is told which split file lacks them and why (was: 'no rating in the
    held-out table')."""
    import shutil

    import pyarrow as pa

    from recsys_pipeline.data.lake import read_parquet, write_parquet

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    path = copy / "clean" / "ratings.parquet"
    ratings = read_parquet(path)
    first = ratings.slice(0, 20)
    new = first.set_column(0, ratings.schema.field(0), pa.array([777] * 20, pa.int32()))
    write_parquet(pa.concat_tables([ratings, new]), path)
    code, _, err = _run(copy, capsys, "check-user", "--user", "777", "--model", "mf")
    test_file = copy / "prepared" / "splits" / "test.parquet"
    assert code == 2 and f"user_id 777 has no rating in the test split ({test_file}, " in err
    assert "came after the split (a new user?): prepare_job" in err


def test_next_lists_the_champions_next_movies_after_a_session(lake, capsys):
    from mlflow.tracking import MlflowClient

    from recsys_pipeline.serving.next_items import next_items

    uri = lm.default_tracking_uri(lake)
    client = MlflowClient(uri, uri)
    scores = {}
    for family in ("gru4rec", "sasrec", "cooccurrence"):
        version = client.get_model_version(f"recsys-{family}", client.get_registered_model(
            f"recsys-{family}").aliases["champion"])
        scores[f"{family}_model"] = client.get_run(version.run_id).data.metrics[
            "best_valid_ndcg_at_10"]
    best = max(scores, key=scores.get)
    session = lm.resolve_session_model(lake)
    assert session.name == best and session.source.startswith("mlflow run")
    lake_model = lm.resolve_session_model(lake, best.removesuffix("_model"))
    for key, value in lake_model.model.state_dict().items():  # the champion is the lake's
        torch.testing.assert_close(session.model.state_dict()[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(session.item_ids, lake_model.item_ids)
    after = [int(i) for i in session.item_ids[:3]]
    code, out, err = _run(lake, capsys, "next", "--after", ",".join(map(str, after + [9999])),
                          "-k", "4")
    assert code == 0, err
    assert f"model: {best}" in out and "left out, not in" in out and "9999" in out
    listed = _column(out, 1)
    want = next_items(session.model, session.item_ids, session.width, np.zeros(3, np.int64),
                      1, np.asarray(after), 4)
    assert listed == want.item_id.tolist() and len(listed) == 4
    assert not set(listed) & set(after)
    # a lake folder by name, and the lake's titles beside the ids
    code, out, err = _run(lake, capsys, "next", "--after", str(after[0]), "--model", "sasrec",
                          "-k", "2")
    assert code == 0, err
    assert "from " + str(lake / "models" / "sasrec_model") in out and len(_column(out, 1)) == 2


def test_next_refuses_what_is_not_a_movie_id(lake, capsys):
    with pytest.raises(SystemExit):
        _run(lake, capsys, "next", "--after", "1,x")
    assert "not a movieId: ['x']" in capsys.readouterr().err


def test_a_moved_lake_serves_its_champion_from_the_new_place(lake, capsys, tmp_path,
                                                             monkeypatch):
    """MLflow's store keeps absolute artifact URIs; after the lake moved, the default
    (champion) serving still loads the runs' weights, from the lake's new place."""
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    moved = tmp_path / "elsewhere" / "lake"
    shutil.copytree(lake, moved)
    parked = lake.parent / "parked"
    shutil.move(lake, parked)  # the original is gone: copy + delete, as a move across disks
    try:
        code, out, err = _run(moved, capsys, "recommend", "--user", "3", "-k", "3")
        assert code == 0, err
        assert "from mlflow run " in out.splitlines()[0] and len(_column(out, 1)) == 3
        served = lm.resolve_model(moved, by="rmse")  # a rating model: weights from its run
        assert served.source.startswith("mlflow run ")
        uri = lm.default_tracking_uri(moved)
        from mlflow.tracking import MlflowClient

        run = MlflowClient(uri, uri).get_run(served.source.removeprefix("mlflow run "))
        assert run.info.artifact_uri.startswith((moved / "mlflow" / "artifacts").as_uri())
    finally:
        shutil.move(parked, lake)


def test_new_runs_of_a_copied_lake_write_into_the_copy(lake, tmp_path, monkeypatch):
    """A copy's first MLflow run, started through the ``mlflow`` resource, keeps its
    artifacts in the copy; the original lake gets nothing."""
    import shutil

    import mlflow

    from recsys_pipeline.resources import LakeResource
    from recsys_pipeline.tracking import MlflowResource

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "copy" / "lake"
    shutil.copytree(lake, copy)
    original_runs = set(os.listdir(lake / "mlflow" / "artifacts"))
    tracker = MlflowResource(lake=LakeResource(root=str(copy)), log_onnx=False)
    with tracker.start_run("copied", {}) as run:  # mlflow's fluent API points at the copy
        mlflow.log_text("hello", "notes/a.txt")
    assert run.info.artifact_uri.startswith((copy / "mlflow" / "artifacts").as_uri())
    assert (copy / "mlflow" / "artifacts" / run.info.run_id / "artifacts" / "notes"
            / "a.txt").read_text() == "hello"
    assert set(os.listdir(lake / "mlflow" / "artifacts")) == original_runs
