"""The champion gate of each registered model family (``recsys-<family>@champion``).

Every registered version is tagged with its selection score (metric, value, mode), the hash
of the validation split it was measured on and the MovieLens release it was trained on.
:func:`gate` decides whether a new version (the challenger) takes the ``champion`` alias from
the current one, by the rule of ``evaluation.selection.champion_verdict``:

* no champion yet: the challenger takes it;
* the champion was trained on another release: the challenger takes it (ids mean other
  people and movies there, so no score of the old champion applies);
* same validation data: the challenger must be better by more than ``margin``;
* other validation data of the same release (a retrain after new ratings or new users): the
  champion is re-scored on the challenger's validation rows it knows (rating models: RMSE /
  MAE through the original ids; fold-in ranking models: NDCG@10 of the challenger's
  validation users the champion never trained on, over the items both know; next-item,
  two-tower and popularity models under temporal splits: NDCG@10 of the challenger's
  validation sequences or users over the items both know), the challenger on the same rows,
  and the margin rule applies; where re-scoring is impossible (random splits, champions
  logged without the artifacts it needs) or fails, ``when_incomparable`` decides.

The decision, both values, the margin and both data hashes go into the challenger run's
MLflow tags (``champion.*``) and the asset's metadata, so a model never silently replaces a
better one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from recsys_pipeline.data.encode import IdMaps, load_id_maps
from recsys_pipeline.evaluation.rating import predict
from recsys_pipeline.evaluation.rescore import known_pairs, pair_metric
from recsys_pipeline.evaluation.selection import Contender, champion_verdict
from recsys_pipeline.tracking_export import PYFUNC_DIR
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import model_device

CHAMPION = "champion"
TAG_SELECTION = "selection_metric"
TAG_VALID_SHA = "data.valid_sha256"
TAG_RELEASE = "data.release"
TAG_SPLIT = "data.split_config"  # the split's config (split_signature) a version trained on
SPLIT_PARAM_PREFIX = "data.split."
FILTER_PARAM_PREFIX = "data.filter."

# champion rescorer: (champion version, metric) -> (champion value, challenger value on the
# same rows, rows compared, validation rows of the challenger)
Rescorer = Callable[[ModelVersion, str], tuple[float, float, int, int]]


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """How demanding the gate is.

    Attributes:
        margin: How much better (metric units, >= 0) a challenger must be; 0 = strictly.
        when_incomparable: ``"keep"`` or ``"promote"`` when the scores cannot be compared.
    """

    margin: float = 0.0
    when_incomparable: str = "keep"


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """What the gate decided and on what evidence.

    Attributes:
        promoted: Whether the challenger took the champion alias.
        reason: Why, in a sentence.
        metric: The selection metric.
        challenger_value: The challenger's value (on the compared rows when re-scored).
        champion_value: The champion's value on the same data (None: no champion, or not
            comparable).
        champion_version: The version that held the alias before (None: none).
        margin: The margin applied.
        challenger_valid_sha256: Hash of the challenger's validation split.
        champion_valid_sha256: Hash of the champion's validation split (None: no champion).
        compared_rows: Validation rows both were scored on when re-scored, else None.
    """

    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    champion_version: str | None
    margin: float
    challenger_valid_sha256: str
    champion_valid_sha256: str | None
    compared_rows: int | None = None

    @property
    def decision(self) -> str:
        """``promoted`` or ``kept`` (the champion)."""
        return "promoted" if self.promoted else "kept"

    def tags(self) -> dict[str, str]:
        """The ``champion.*`` tags of the challenger's run (plus the legacy two)."""
        out = {"champion": str(self.promoted).lower(), "champion_reason": self.reason,
               "champion.decision": self.decision, "champion.metric": self.metric,
               "champion.margin": repr(self.margin),
               "champion.challenger_value": repr(self.challenger_value),
               "champion.challenger_valid_sha256": self.challenger_valid_sha256}
        optional = {"champion.champion_value": self.champion_value,
                    "champion.champion_version": self.champion_version,
                    "champion.champion_valid_sha256": self.champion_valid_sha256,
                    "champion.compared_rows": self.compared_rows}
        out.update({k: repr(v) if isinstance(v, float) else str(v)
                    for k, v in optional.items() if v is not None})
        return out

    def metadata(self) -> dict[str, object]:
        """Asset metadata entries (``champion_*``)."""
        out: dict[str, object] = {
            "champion": self.promoted, "champion_reason": self.reason,
            "champion_decision": self.decision, "champion_margin": self.margin,
            f"challenger_valid_{self.metric.replace('@', '_at_')}":
                _rounded(self.challenger_value),
            "challenger_valid_sha256": self.challenger_valid_sha256}
        if self.champion_value is not None:
            out[f"champion_valid_{self.metric.replace('@', '_at_')}"] = \
                _rounded(self.champion_value)
        if self.champion_version is not None:
            out["previous_champion_version"] = self.champion_version
        if self.champion_valid_sha256 is not None:
            out["champion_valid_sha256"] = self.champion_valid_sha256
        if self.compared_rows is not None:
            out["champion_compared_rows"] = self.compared_rows
        return out


def _rounded(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else value


def current_champion(client: MlflowClient, name: str
                     ) -> tuple[ModelVersion, Contender] | None:
    """``(version, contender)`` holding the champion alias of ``name``, or None."""
    aliases = client.get_registered_model(name).aliases  # alias -> version
    if CHAMPION not in aliases:
        return None
    version = client.get_model_version(name, str(aliases[CHAMPION]))
    tags = version.tags
    contender = Contender(tags.get(TAG_SELECTION, ""), float(tags.get("selection_value", "nan")),
                          tags.get("selection_mode", "min"), tags.get(TAG_VALID_SHA, ""))
    return version, contender


def split_signature(params: Mapping[str, Any] | None) -> str:
    """The split's and the filters' configs from a run's ``data.split.*`` and
    ``data.filter.*`` params, as one canonical string (``""`` without split params):
    versions trained on different splits or filters are not compared (another filter moves
    the split's cuts, so one model's training rows are the other's validation rows)."""
    params = params or {}
    split = {k: str(v) for k, v in params.items()
             if k.startswith((SPLIT_PARAM_PREFIX, FILTER_PARAM_PREFIX))}
    if not any(k.startswith(SPLIT_PARAM_PREFIX) for k in split):
        return ""
    return json.dumps({k.removeprefix(SPLIT_PARAM_PREFIX): v for k, v in split.items()},
                      sort_keys=True)


def gate(client: MlflowClient, name: str, version: str, new: Contender,
         policy: GatePolicy | None = None, release: str = "",
         rescore: Rescorer | None = None, split: str = "") -> GateDecision:
    """Tag ``version`` with its selection score and release, and apply the champion gate.

    Args:
        client: The registry.
        name: Registered model (``recsys-<family>``).
        version: The challenger's version.
        new: The challenger's selection score on its validation split.
        policy: Margin and incomparable policy (default: strictly better, keep).
        release: The MovieLens release trained on ("" = unknown: not compared).
        rescore: Re-scores the champion (and the challenger) on the challenger's
            validation rows; None where the family cannot be re-scored.
        split: The challenger's :func:`split_signature` ("" = not compared). A champion
            trained on another split config is not re-scored (the challenger's validation
            rows may be in its training data): the current split's model takes over.

    Returns:
        The decision; the alias has moved when ``promoted``.
    """
    policy = policy or GatePolicy()
    tags = {TAG_SELECTION: new.metric, "selection_value": repr(new.value),
            "selection_mode": new.mode, TAG_VALID_SHA: new.valid_sha256}
    if release:
        tags[TAG_RELEASE] = release
    if split:
        tags[TAG_SPLIT] = split
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    found = current_champion(client, name)
    base = dict(metric=new.metric, margin=policy.margin, challenger_valid_sha256=new.valid_sha256)
    if found is None:
        won, reason = champion_verdict(new, None, policy.margin, policy.when_incomparable)
        decision = GateDecision(won, reason, challenger_value=new.value, champion_value=None,
                                champion_version=None, champion_valid_sha256=None, **base)
    else:
        decision = _against(found, new, policy, release, split, rescore, base)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decision


def _against(found: tuple[ModelVersion, Contender], new: Contender, policy: GatePolicy,
             release: str, split: str, rescore: Rescorer | None, base: dict) -> GateDecision:
    champion, current = found
    known = {"champion_version": str(champion.version),
             "champion_valid_sha256": current.valid_sha256, **base}
    old_release = champion.tags.get(TAG_RELEASE, "")
    if release and old_release and release != old_release:
        return GateDecision(True, f"the champion was trained on {old_release}, the challenger "
                                  f"on {release}: not comparable, the new release's model "
                                  "takes over", challenger_value=new.value,
                            champion_value=None, **known)
    old_split = champion.tags.get(TAG_SPLIT, "")
    if split and old_split and split != old_split:
        return GateDecision(True, f"the champion was trained on another split ({old_split}), "
                                  f"the challenger on {split}: not comparable (the new "
                                  "validation rows may be the champion's training rows), the "
                                  "current split's model takes over", challenger_value=new.value,
                            champion_value=None, **known)
    same_data = current.valid_sha256 == new.valid_sha256 and current.metric == new.metric
    if not same_data and rescore is not None and current.metric == new.metric:
        try:
            champ_value, chal_value, rows, total = rescore(champion, new.metric)
        except (ValueError, OSError, mlflow.MlflowException) as exc:
            why = f"re-scoring the champion failed ({exc})"
        else:
            same = new.valid_sha256
            won, reason = champion_verdict(Contender(new.metric, chal_value, new.mode, same),
                                           Contender(new.metric, champ_value, new.mode, same),
                                           policy.margin, policy.when_incomparable)
            return GateDecision(won, f"on the {rows} of {total} validation rows both models "
                                     f"know: {reason}", challenger_value=chal_value,
                                champion_value=champ_value, compared_rows=rows, **known)
        won, reason = champion_verdict(new, current, policy.margin, policy.when_incomparable)
        return GateDecision(won, f"{reason}; {why}", challenger_value=new.value,
                            champion_value=None, **known)
    won, reason = champion_verdict(new, current, policy.margin, policy.when_incomparable)
    return GateDecision(won, reason, challenger_value=new.value,
                        champion_value=current.value if same_data else None, **known)


def rating_rescorer(model: object, valid: RatingData, maps: IdMaps,
                    tracking_uri: str) -> Rescorer:
    """A :data:`Rescorer` for pair-scoring (rating) models.

    The champion's id maps come from its run's ``id_maps/`` artifacts and its weights from
    its logged model (int64 ``[user_idx, item_idx]`` pyfunc input; a champion registered as
    the original-id pyfunc, the rating autoencoder, gets ``user_id, item_id`` columns);
    ``model`` (the
    challenger, in memory) is scored on the same rows.

    Args:
        model: The challenger (``score(users, items)``).
        valid: The challenger's validation rows (its index space).
        maps: The challenger's id maps.
        tracking_uri: Where the champion's run lives.
    """
    def rescore(champion: ModelVersion, metric: str) -> tuple[float, float, int, int]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = mlflow.artifacts.download_artifacts(
                run_id=champion.run_id, artifact_path="id_maps", dst_path=tmp,
                tracking_uri=tracking_uri)
            champion_maps = load_id_maps(folder)
        users = valid.users.cpu().numpy()
        items = valid.items.cpu().numpy()
        mask, cu, ci = known_pairs(maps.to_user_ids(users), maps.to_item_ids(items),
                                   champion_maps)
        if not mask.any():
            raise ValueError("the champion knows none of the challenger's validation rows")
        loaded = mlflow.pyfunc.load_model(champion.source)
        if str(champion.source).rstrip("/").endswith(PYFUNC_DIR):
            # a row-scored champion (the rating autoencoder) is registered as the
            # original-id pyfunc: it takes user_id / item_id columns, not index pairs
            import pandas as pd

            frame = pd.DataFrame({"user_id": maps.to_user_ids(users)[mask],
                                  "item_id": maps.to_item_ids(items)[mask]})
            champ_pred = np.asarray(loaded.predict(frame), dtype=np.float64).reshape(-1)
        else:
            champ_pred = np.asarray(loaded.predict(np.stack([cu, ci], 1)), dtype=np.float64)
        subset = valid.subset(torch.from_numpy(np.flatnonzero(mask)).to(valid.device))
        chal_pred = predict(model, subset.to(model_device(model)))  # type: ignore[arg-type]
        truth = subset.ratings
        return (pair_metric(champ_pred, truth, metric), pair_metric(chal_pred, truth, metric),
                int(mask.sum()), int(mask.size))

    return rescore


__all__ = ["CHAMPION", "TAG_RELEASE", "TAG_SELECTION", "TAG_SPLIT", "TAG_VALID_SHA",
           "GateDecision", "GatePolicy", "current_champion", "gate", "rating_rescorer",
           "split_signature"]
