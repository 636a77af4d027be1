"""The DeepRecommender-style autoencoder as a *rating* model (Kuchaiev & Ginsburg 2017).

The same network as :class:`~recsys_pipeline.models.autoencoder.AutoEncoderModel` (SELU
layers, large dropout on the code, optional tied decoder and dense re-feeding), trained the
way the paper trains it: on the explicit ratings of the rating models' per-user split, each
user's train-split rating row as input, masked MSE on the observed ratings only
(``unobserved_weight = 0``), predictions clamped to the rating scale, early-stopped on the
validation RMSE (``training.experiment.run_experiment``). ``score(u, i)`` is item ``i`` of
the reconstruction of user ``u``'s stored train row, so RMSE / MAE / FCP and the top-K
metrics apply exactly as to the other rating models.

A family of its own (``autoencoder_rating``, registered as ``recsys-autoencoder_rating``),
apart from the ranking autoencoder (``recsys-autoencoder``, binarized strong-generalization
rows, selected by NDCG): the two are selected by different metrics on different data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.training.data import RatingData


@dataclass(frozen=True)
class AutoEncoderRatingConfig(AutoEncoderConfig):
    """:class:`~recsys_pipeline.models.autoencoder.AutoEncoderConfig` of the rating model
    (the same fields; its own type so that a config names its model unambiguously).

    The defaults are the paper's rating setting: masked MSE on observed ratings only
    (``unobserved_weight = 0``) and clamped predictions (``clamp = True``).
    """


class AutoEncoderRatingModel(AutoEncoderModel):
    """:class:`AutoEncoderModel` trained on explicit rating rows, a rating model.

    ``row_trained``: ``run_experiment`` trains it on user rows (``training.ranking_loop``)
    instead of the pair-wise MSE loop; its stored history is the full ``n_users``-row train
    matrix of the split, so every user of the split is scored from their own train row.
    """

    family: ClassVar[str] = "autoencoder_rating"
    config_cls: ClassVar[type] = AutoEncoderRatingConfig
    predicts_ratings: ClassVar[bool] = True
    row_trained: ClassVar[bool] = True

    def prepare(self, train: RatingData) -> None:
        """Start the output layer's bias at the train ratings' mean (as MF starts at ``μ``).

        The masked loss sends no gradient to an item nobody rated in train, so its output
        would stay at the initial bias (about 0, clamped to ``rating_min``): a validation or
        test rating of such an item would be predicted as the lowest rating. From ``μ`` such
        items are predicted near the mean, and the others start there.
        """
        mean = float(train.ratings.double().mean()) if len(train) else 0.0
        with torch.no_grad():
            if self.config.constrained:
                self.decoder_bias[-1].fill_(mean)
            else:
                self.decoder[-1].bias.fill_(mean)
