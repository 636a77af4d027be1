"""The champion alias of each registered model family (``recsys-<family>@champion``).

Every registered version is tagged with its selection score (metric, value, mode) and the
hash of the validation split it was measured on; ``promote_if_better`` applies the rule of
``evaluation.selection.champion_verdict`` to a new version and moves the alias when it wins.
"""

from mlflow.tracking import MlflowClient

from recsys_pipeline.evaluation.selection import Contender, champion_verdict

CHAMPION = "champion"
TAG_SELECTION = "selection_metric"
TAG_VALID_SHA = "data.valid_sha256"


def current_champion(client: MlflowClient, name: str) -> tuple[str, Contender] | None:
    """``(version, contender)`` holding the champion alias of ``name``, or None."""
    aliases = client.get_registered_model(name).aliases  # alias -> version
    if CHAMPION not in aliases:
        return None
    version = client.get_model_version(name, str(aliases[CHAMPION]))
    tags = version.tags
    contender = Contender(tags.get(TAG_SELECTION, ""), float(tags.get("selection_value", "nan")),
                          tags.get("selection_mode", "min"), tags.get(TAG_VALID_SHA, ""))
    return str(version.version), contender


def promote_if_better(client: MlflowClient, name: str, version: str,
                      new: Contender) -> tuple[bool, str]:
    """Tag ``version`` with its selection score and apply the champion rule to it."""
    for key, value in ((TAG_SELECTION, new.metric), ("selection_value", repr(new.value)),
                       ("selection_mode", new.mode), (TAG_VALID_SHA, new.valid_sha256)):
        client.set_model_version_tag(name, version, key, value)
    current = current_champion(client, name)
    won, reason = champion_verdict(new, None if current is None else current[1])
    if won:
        client.set_registered_model_alias(name, CHAMPION, version)
    return won, reason
