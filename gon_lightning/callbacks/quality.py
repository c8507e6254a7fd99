"""Sample quality in the training loop: the figures of `gon-lightning evaluate`, logged at epoch ends.

`--trainer.callbacks+=SampleQuality` draws `num_samples` samples after training epochs (every rank its share, from a
generator seeded the same way each time, so the curve follows the model rather than the draw), extracts their
features, gathers them across processes through a torchmetrics state, and logs `quality/<figure>` to every logger,
scored against the training split with the protocol of `evaluate` (docs/sample_quality.md). Every process computes
the same figures, so a checkpoint may monitor one (e.g. `--checkpoint.monitor quality/fd_lenet`). The reference
features are computed once, by rank 0, and cached beside the decoded images for every later run and `evaluate`.

The figures of a few thousand samples are higher than `evaluate`'s at 10,000 (the Fréchet distance is biased upward
at small N): the curve is for following a run; the evaluate figure is the one to report.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gon_lightning.callbacks.schedule import TimeShareSchedule
from gon_lightning.errors import UserError, positive_int
from gon_lightning.evaluation import check_sampler, draw_samples, quantised  # the evaluate command's draw, exactly
from gon_lightning.metrics import (
    NEAREST_K,
    CopyingTest,
    FeatureExtractor,
    extract,
    load_extractor,
    reference_features,
    score_samples,
)
from gon_lightning.models.base import SAME_ON_EVERY_PROCESS

OPTION = "SampleQuality."


class GatheredFeatures(Metric):
    """The features every process adds, concatenated across processes when computed (torchmetrics syncs them)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.features.append(features)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.features)


class SampleQuality(TimeShareSchedule):
    """Log the Fréchet and kernel distances, precision, recall, density and coverage of the model's samples against
    the training split after training epochs, as `quality/<figure>` (`gon_lightning.metrics.figure_names`), and
    how close they lie to it against the test split (`quality/copy_ratio`, `quality/copying_z`).

    Args:
        every_n_epochs: evaluate after every N-th training epoch (0 disables the callback). None (the default)
            keeps within a time budget: after the first epoch and the last one, and in between whenever the time
            spent evaluating stays within `max_time_share` of the training time so far.
        max_time_share: the budget of the default schedule, as a share of the training time.
        num_samples: samples drawn per evaluation, over all processes (each draws its share).
        extractor: the features (`inception`, `lenet` or `resnet`); default the DataModule's.
        extractor_weights: a weights file for the extractor instead of its default one.
        sampler: the model's sampler (`model.sample(n, sampler=...)`); default the model's own.
        nearest_k: k of the k-nearest-neighbour balls of precision, recall, density and coverage.
        kid_subsets: subsets of the kernel distance's estimate. `evaluate` takes the KID paper's 100; the loop
            takes 10 by default, the largest cost of an evaluation otherwise (the mean estimates the same
            distance, with the spread of 10 subsets).
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        max_time_share: float = 0.05,
        num_samples: int = 1000,
        extractor: str | None = None,
        extractor_weights: str | None = None,
        sampler: str | None = None,
        nearest_k: int = NEAREST_K,
        kid_subsets: int = 10,
    ) -> None:
        super().__init__(every_n_epochs, max_time_share, OPTION)
        positive_int(OPTION + "num_samples", num_samples)
        positive_int(OPTION + "nearest_k", nearest_k)
        positive_int(OPTION + "kid_subsets", kid_subsets)
        if num_samples <= nearest_k:
            raise UserError(f"{OPTION}num_samples ({num_samples}) must exceed {OPTION}nearest_k ({nearest_k})")
        self.num_samples = num_samples
        self.extractor = extractor
        self.extractor_weights = extractor_weights
        self.sampler = sampler
        self.nearest_k = nearest_k
        self.kid_subsets = kid_subsets
        self._features: FeatureExtractor | None = None
        self._reference: Tensor | None = None
        self._copying: CopyingTest | None = None
        self._gathered = GatheredFeatures()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "extractor"):
            raise UserError("SampleQuality scores samples against a gon-lightning DataModule's training split")
        check_sampler(pl_module, self.sampler, OPTION + "sampler")  # before an epoch is spent
        name = self.extractor or datamodule.extractor
        device = pl_module.device
        # rank 0 trains a missing classifier and computes the reference first; the others then read its cache
        if trainer.is_global_zero:
            self._prepare(name, datamodule, device)
        trainer.strategy.barrier("SampleQuality reference")
        if not trainer.is_global_zero:
            self._prepare(name, datamodule, device)
        self._gathered = self._gathered.to(device)

    def _prepare(self, name: str, datamodule: Any, device: torch.device) -> None:
        self._features = load_extractor(name, datamodule, self.extractor_weights, device)
        self._reference = reference_features(datamodule, "train", self._features)
        # the copying figures' k-means cells and the test split's distances, fitted once (seconds)
        self._copying = CopyingTest(self._reference, reference_features(datamodule, "test", self._features))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # every process must take the same decision: rank 0's clock decides
        if not trainer.strategy.broadcast(self._due(trainer, trainer.current_epoch + 1)):
            return
        start = time.perf_counter()
        try:
            figures = self.measure(trainer, pl_module)
        except NotImplementedError as error:  # e.g. no latent Gaussian yet: the same on every rank
            rank_zero_warn(f"SampleQuality skipped epoch {trainer.current_epoch}: {error}")
            return
        pl_module.log_dict({f"quality/{name}": value for name, value in figures.items()}, **SAME_ON_EVERY_PROCESS)
        self._spent(time.perf_counter() - start)

    def measure(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Draw this process's share of the samples, gather every process's features, score them (on every
        process: the same numbers)."""
        assert self._features is not None and self._reference is not None
        rank, world = trainer.global_rank, trainer.world_size
        count = self.num_samples // world + (rank < self.num_samples % world)
        batch_size = trainer.datamodule.batch_size
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) + rank
        was_training = pl_module.training
        pl_module.eval()
        try:
            why = None
            try:
                for batch in draw_samples(pl_module, count, batch_size, self.sampler, seed):
                    self._gathered.update(extract(self._features, quantised(batch)).to(pl_module.device))
            except NotImplementedError as error:
                why = error
            # all processes gather, or none: one that cannot sample yet must not leave the others in the gather
            if not trainer.strategy.reduce_boolean_decision(why is None, all=True):
                raise why or NotImplementedError("another process cannot sample yet")
            fake = self._gathered.compute().cpu()  # every process's features
        finally:
            pl_module.train(was_training)
            self._gathered.reset()  # an interrupted draw leaves nothing for the next one
        return score_samples(
            self._reference,
            fake,
            self._features.name,
            self.nearest_k,
            kid_subsets=self.kid_subsets,
            held_out=self._copying,
        )
