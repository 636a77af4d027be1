"""Torch-side orchestration: where trained models are stored and which device trains them.

``ModelIOManager`` keeps each model asset as a folder ``<lake>/<key path>/`` holding
``config.json`` + ``state_dict.pt`` (``models.base.save_model``; read back with
``torch.load(weights_only=True)``, nothing is pickled). ``DeviceResource`` picks the device.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import torch
from torch import nn

from recsys_pipeline.models.base import (
    CONFIG_FILE,
    STATE_FILE,
    RatingModel,
    load_model,
)
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.serving.lake_models import TRAINED_ON_FILE, lake_data_signature
from recsys_pipeline.training.device import pick_device
from recsys_pipeline.training.experiment import EvalConfig


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` onto ``dst`` (same parent), replacing any old ``dst``.

    The old folder is first renamed aside, then ``src`` renamed into place (both atomic
    renames), so a reader sees the old model or the new one, never a mix of their files; only
    between the two renames is there briefly no folder at all.
    """
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        os.replace(dst, old / dst.name)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(dst: Path, marker: str, what: str) -> None:
    """Refuse to let :func:`replace_dir` replace ``dst`` unless it is missing, empty, or an
    earlier ``what`` (it holds the file ``marker``): never a user's own folder or file, nor
    the working directory or one above it.

    Raises:
        ValueError: Naming ``dst`` and what to do.
    """
    if not dst.exists():
        return
    here = Path.cwd().resolve()
    resolved = dst.resolve()
    if resolved == here or resolved in here.parents:
        raise ValueError(f"{dst}: the working folder or one above it cannot be replaced; "
                         f"name a new folder for the {what}")
    if not dst.is_dir():
        raise ValueError(f"{dst} exists and is not a folder; name a new folder for the {what}")
    if any(dst.iterdir()) and not (dst / marker).is_file():
        raise ValueError(f"{dst} exists and is not an earlier {what} (no {marker}); it would be "
                         "replaced: name a new or empty folder, or remove it yourself")


class ModelIOManager(dg.ConfigurableIOManager):
    """Rating models as ``<lake>/<key path>/{config.json,state_dict.pt}`` (e.g.
    ``models/mf_model/``), written into a hidden temp folder and renamed into place."""

    lake: dg.ResourceDependency[LakeResource]

    def _dir(self, key: dg.AssetKey) -> Path:
        return self.lake.path(*key.path)

    def _check(self, context: dg.OutputContext, obj: nn.Module) -> None:
        if not isinstance(obj, RatingModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a RatingModel, "
                            f"got {type(obj).__name__}")

    def _save(self, obj: nn.Module, folder: Path) -> None:
        obj.save(folder)  # type: ignore[operator]

    def _load(self, folder: Path) -> nn.Module:
        return load_model(folder, map_location="cpu")

    def handle_output(self, context: dg.OutputContext, obj: nn.Module) -> None:
        self._check(context, obj)
        final = self._dir(context.asset_key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            self._save(obj, tmp)
            trained_on = lake_data_signature(self.lake.path())  # serving checks it
            (tmp / TRAINED_ON_FILE).write_text(json.dumps(trained_on, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the model from other users
            replace_dir(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        size = sum((final / f).stat().st_size for f in (CONFIG_FILE, STATE_FILE))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(final)),
                                     "size_bytes": size, "family": obj.family})

    def load_input(self, context: dg.InputContext) -> nn.Module:
        return self._load(self._dir(context.asset_key))


class DeviceResource(dg.ConfigurableResource):
    """The torch device models train and evaluate on."""

    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"
    # torch's CPU threads for the run (torch.set_num_threads); 0 = torch's default, one per
    # core. Set 1 where other work shares the cores: with another process busy on a 2-core
    # machine, MF trained 13x and DeepFM up to 20x slower on 2 threads than on 1
    threads: int = 0

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.threads < 0:
            raise ValueError(f"device resource: threads={self.threads} must be >= 0 "
                             "(0: torch's default)")
        if self.threads:
            torch.set_num_threads(self.threads)

    def torch_device(self) -> torch.device:
        """The resolved device; ValueError when CUDA is asked for but absent."""
        return pick_device(self.device)


class EvaluationResource(dg.ConfigurableResource):
    """The final evaluation's settings, shared by every rating model of a run (so their
    leaderboard rows compare like with like)."""

    # rank a fixed sample of this many users per split for the top-K metrics (0 = every
    # user): MLP, NeuMF and DeepFM score every user x item pair through their network, which
    # at ml-10m's 70k users x 10k items takes 30-60 min per split on a CPU. Rating metrics
    # (RMSE, MAE, FCP) always cover every held-out rating
    max_ranked_users: int = 0

    def eval_config(self) -> EvalConfig:
        """The ``training.experiment.EvalConfig`` of these settings (validated)."""
        if self.max_ranked_users < 0:
            raise ValueError(f"evaluation resource: max_ranked_users={self.max_ranked_users} "
                             "must be >= 0 (0: every user)")
        return EvalConfig(max_users=self.max_ranked_users or None)


def build_train_resources(lake_root: str) -> dict[str, object]:
    """The resources the train and evaluate assets add to ``resources.build_resources``:
    ``mlflow`` (SQLite tracking in the lake unless configured), ``model_io_manager``, ``device``.
    """
    from recsys_pipeline.tracking import MlflowResource

    lake = LakeResource(root=lake_root)
    return {"mlflow": MlflowResource(lake=lake), "model_io_manager": ModelIOManager(lake=lake),
            "device": DeviceResource(), "evaluation": EvaluationResource()}
