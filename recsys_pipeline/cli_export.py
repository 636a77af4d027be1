"""``recsys-pipeline export`` and ``recsys-pipeline project``: a trained model as ONNX, and its
item embeddings in 2-D, from the lake (the MLflow champion, ``--model NAME`` or ``--run-id``).

* ``export`` writes ``model.onnx`` (rating models and two-tower: ``PairScorer``, input
  ``pairs`` int64 ``[batch, 2]`` of ``user_idx, item_idx`` → ``scores`` float32 ``[batch]``;
  fold-in models: input ``rows`` float32 ``[batch, n_items]`` → ``scores`` of every item
  column; opset 18; sequence models are refused with the reason), the id maps
  (``user_map.parquet``, ``item_map.parquet``: original MovieLens id of each index) and
  ``export.json`` + ``README.txt`` saying so; for two-tower and MF also
  ``user_vectors.parquet`` / ``item_vectors.parquet``, vectors whose inner products rank
  like the model, for a nearest-neighbour index (``serving.retrieval``). The folder is
  written aside and renamed into place. It prints onnxruntime's max abs difference from
  torch on a batch of pairs.
* ``project`` writes ``vectors.tsv`` + ``metadata.tsv`` (TensorBoard Embedding Projector),
  ``projection.parquet`` and the PCA / t-SNE plots (``assets.project.write_item_projection``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

README = """{name}: {family} model exported to ONNX (opset {opset}) by recsys-pipeline export.

model.onnx   input  {input_line}
             output {output_line}   {what}
user_map.parquet / item_map.parquet: user_idx -> user_id, item_idx -> item_id (MovieLens ids)
{columns_note}
import onnxruntime as ort
session = ort.InferenceSession("model.onnx")
scores = session.run(["scores"], {{"{input_name}": {input_name}}})[0]

onnxruntime vs torch: max abs difference {diff:.3g}
"""

RETRIEVAL_NOTE = """
user_vectors.parquet / item_vectors.parquet: user_id / item_id and a {dim}-float vector each,
for a nearest-neighbour (maximum inner product) index: a user's top-K items are the K
largest user · item, the model's own order ({score}). Leave out the items the user has
rated (the lake's clean/ratings.parquet: user_id, item_id), as recommend does.

import numpy as np, pyarrow.parquet as pq
from recsys_pipeline.serving.retrieval import read_vectors  # or pyarrow: column "vector"
user_ids, users = read_vectors("user_vectors.parquet")
item_ids, items = read_vectors("item_vectors.parquet")
rated = pq.read_table("<lake>/clean/ratings.parquet", columns=["user_id", "item_id"],
                      filters=[("user_id", "=", int(user_ids[0]))]).column("item_id")
scores = users[0] @ items.T
scores[np.isin(item_ids, rated.to_numpy())] = -np.inf  # never what they rated
top = item_ids[scores.argsort()[::-1][:10]]
"""


def _io_line(name: str, spec: list) -> str:
    dtype, shape = spec
    return f'"{name}" {dtype} [{", ".join(str(d) for d in shape)}]'


def export_model(served: object, out: str | Path) -> tuple[Path, float]:
    """Write the export folder ``out`` for a ``ServingModel`` (see the module doc).

    A ranking model served through ``serving.ranking_serving`` is exported as its own model:
    a fold-in model (autoencoder, Mult-VAE, EASE) as its row scorer (input ``rows`` float32
    ``[batch, n_items]`` over ``item_map``'s items → scores of those items), two-tower as a
    pair scorer; a sequence model cannot be exported (``ValueError``).

    Returns:
        ``(folder, max abs difference onnxruntime vs torch)``.
    """
    from recsys_pipeline.data.encode import save_id_maps
    from recsys_pipeline.model_io import check_replaceable, replace_dir
    from recsys_pipeline.serving.ranking_serving import RankingServing
    from recsys_pipeline.serving.retrieval import (
        ITEM_VECTORS_FILE,
        USER_VECTORS_FILE,
        retrieval_vectors,
        write_retrieval_vectors,
    )
    from recsys_pipeline.tracking_export import onnx_export_checked

    model, out = served.model, Path(out)  # type: ignore[attr-defined]
    check_replaceable(out, "export.json", "export")
    if isinstance(model, RankingServing):
        model = model.model  # the trained model, without the serving masks (-inf scores)
    data, diff, info = onnx_export_checked(model)
    info.update({"model": served.name, "source": served.source,  # type: ignore[attr-defined]
                 "predicts_ratings": bool(getattr(model, "predicts_ratings", False)),
                 "id_maps": ["user_map.parquet", "item_map.parquet"]})
    what = ("predicted ratings" if info["predicts_ratings"]
            else "ranking scores (higher = better)")
    (input_name, input_spec), = info["inputs"].items()
    (output_name, output_spec), = info["outputs"].items()
    cells = ("ratings per row (0 = not rated)" if info["family"] == "autoencoder_rating"
             else "interactions per row (1 = rated >= the model's threshold)")
    columns_note = (f"\nrows: one user's {cells},\n      column j = item_idx j of "
                    "item_map.parquet; works for users the model never saw.\n"
                    if input_name != "pairs" else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    (tmp / "model.onnx").write_bytes(data)
    save_id_maps(served.maps, tmp)  # type: ignore[attr-defined]
    try:
        found = retrieval_vectors(model)
    except ValueError as exc:
        info["retrieval_vectors"] = {"skipped": str(exc)}
        retrieval_note = f"\nno user_vectors / item_vectors: {exc}\n"
    else:
        write_retrieval_vectors(found, served.maps, tmp)  # type: ignore[attr-defined]
        info["retrieval_vectors"] = {"files": [USER_VECTORS_FILE, ITEM_VECTORS_FILE],
                                     "dim": int(found.items.shape[1]), "score": found.score}
        retrieval_note = RETRIEVAL_NOTE.format(dim=found.items.shape[1], score=found.score)
    (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.txt").write_text(README.format(
        name=info["model"], family=info["family"], opset=info["opset"], what=what,
        input_line=_io_line(input_name, input_spec), input_name=input_name,
        output_line=_io_line(output_name, output_spec), columns_note=columns_note, diff=diff)
        + retrieval_note)
    tmp.chmod(0o755)
    replace_dir(tmp, out)
    return out, diff


def _cmd_export(args: argparse.Namespace) -> int:
    from recsys_pipeline.cli import _serving_model

    served = _serving_model(args)
    out = Path(args.out) if args.out else Path(args.lake) / "exports" / served.name
    folder, diff = export_model(served, out)
    print(f"ONNX (opset 18): {folder / 'model.onnx'}; id maps and export.json beside it")
    print(f"max abs difference onnxruntime vs torch: {diff:.3g}")
    retrieval = json.loads((folder / "export.json").read_text())["retrieval_vectors"]
    if "files" in retrieval:
        print(f"nearest-neighbour vectors ({retrieval['dim']} floats, inner product ranks like "
              f"the model): {folder / retrieval['files'][0]}, {folder / retrieval['files'][1]}")
    else:
        print(f"no nearest-neighbour vectors: {retrieval['skipped']}")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    from recsys_pipeline.assets.project import write_item_projection
    from recsys_pipeline.cli import _serving_model

    served = _serving_model(args, by="embeddings")
    out = (Path(args.out) if args.out
           else Path(args.lake) / "reports" / "item_projection" / served.name)
    result = write_item_projection(args.lake, served, out, tuple(args.methods),
                                   args.tsne_max_items, args.perplexity, args.seed)
    variance = ", ".join(f"{v:.1%}" for v in result.explained_variance)
    print(f"{result.n_items} items projected (t-SNE on {result.n_tsne_items}); PCA explains "
          f"{variance} of the variance")
    print(f"Embedding Projector files: {out / 'vectors.tsv'}, {out / 'metadata.tsv'}")
    for method in result.pngs:
        print(f"{method} plot: {out / f'{method}.png'}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``project`` subcommands to ``recsys-pipeline``'s parser."""
    from recsys_pipeline.cli import _add_model_args

    e = sub.add_parser("export", help="a trained model's scorer as ONNX, checked against torch",
                       description="Export the model's pair scorer to ONNX (opset 18), check it "
                                   "with onnxruntime against torch on a batch, and write it "
                                   "with the id maps and export.json / README.txt; for "
                                   "two-tower and MF also user/item vectors (Parquet) for a "
                                   "nearest-neighbour index.")
    e.add_argument("--out", metavar="DIR",
                   help="target folder (default: <lake>/exports/<model>)")
    _add_model_args(e)
    e.set_defaults(func=_cmd_export)

    p = sub.add_parser("project", help="item embeddings in 2-D (PCA, t-SNE) by genre",
                       description="Project the model's item embeddings with PCA and t-SNE, "
                                   "plot them by primary genre and write vectors.tsv + "
                                   "metadata.tsv for the TensorBoard Embedding Projector.")
    p.add_argument("--out", metavar="DIR",
                   help="target folder (default: <lake>/reports/item_projection/<model>)")
    p.add_argument("--tsne-max-items", type=int, default=2000,
                   help="t-SNE on at most this many (most-rated) items; 0 = PCA only "
                        "(default: 2000)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    p.add_argument("--seed", type=int, default=0, help="seed of PCA's solver and t-SNE")
    p.add_argument("--methods", nargs="+", default=["pca", "tsne"], choices=["pca", "tsne"],
                   help="projections to compute (default: pca tsne)")
    _add_model_args(p, by="embeddings")
    p.set_defaults(func=_cmd_project)
