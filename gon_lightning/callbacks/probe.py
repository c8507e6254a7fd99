"""The online linear probe: how linearly separable the latents are, measured while the model trains.

The convention of self-supervised frameworks (solo-learn, lightly): a linear classifier on the detached latents of
each training batch, trained by its own optimizer beside the model and never back into it, its accuracy logged on
the validation split every epoch. Here the head first standardises the latents (BatchNorm1d without affine
parameters: running mean and variance), as the post-hoc probe does with the training split's statistics
(`gon_lightning.latents.probes`), since a GON's latents are ~1e-3 in scale.

Labels: batches are images only, so the head reads each batch's labels from the DataModule by the batch's indices
(`ImageDataModule.train_batch_indices`, `labels_at`): what the model sees, and so its weights, are the same with the
probe on or off. The head's initial weights come from their own seed and the validation encoding runs inside a
forked generator: the run's random state is untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import Tensor, nn

from gon_lightning.errors import UserError, positive, positive_int
from gon_lightning.models.base import SAME_ON_EVERY_PROCESS


class OnlineLinearProbe(Callback):
    """Train a linear classifier on the detached latents of every training batch; log its accuracy per epoch.

    Logs `probe/acc` (accuracy on the validation split, whose latents the model encodes as in validation, under
    its evaluation protocol) and `probe/train_acc` (on the training batches as they came, before each update).

    Args:
        num_classes: classes of the labels; default the largest training label + 1.
        lr: the head's Adam learning rate.
        seed: seed of the head's initial weights.
    """

    def __init__(self, num_classes: int | None = None, lr: float = 1e-3, seed: int = 0) -> None:
        if num_classes is not None:
            positive_int("probe.num_classes", num_classes)
        positive("probe.lr", lr)
        self.num_classes, self.lr, self.seed = num_classes, lr, seed
        self.head: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._state: dict[str, Any] | None = None
        self._counts: dict[str, Tensor] = {}
        self._val_order: Tensor | None = None
        self._classes = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from gon_lightning.models.latent import LatentModel

        if stage != "fit":
            return
        if not isinstance(pl_module, LatentModel):
            raise UserError(f"OnlineLinearProbe probes latents, and {type(pl_module).__name__} has none: remove it")
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "labels_at") or getattr(datamodule, "stream", None) is not None:
            raise UserError(
                "OnlineLinearProbe reads each batch's labels from an in-memory image DataModule of gon-lightning: "
                "remove it, or drop data.init_args.stream"
            )
        datamodule.setup("fit")
        labels = datamodule.labels_at("train", torch.arange(len(datamodule.datasets["train"])))
        if labels is None or len(labels) == 0 or bool((labels < 0).any()):
            raise UserError(f"OnlineLinearProbe needs labels, and {type(datamodule).__name__}'s images have none")
        self._classes = self.num_classes or int(labels.max()) + 1

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # built here, not in `setup`: the strategy has moved the model to its device by now, and the head and its
        # optimizer's state (restored from a checkpoint) must live there too
        classes = self._classes
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)  # built on the CPU: no device generator is touched
            self.head = nn.Sequential(nn.BatchNorm1d(pl_module.nz, affine=False), nn.Linear(pl_module.nz, classes))
        self.head.to(pl_module.device)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        if self._state is not None:  # resumed: the head goes on from the checkpoint
            self.head.load_state_dict(self._state["head"])
            self.optimizer.load_state_dict(self._state["optimizer"])
            self._state = None

    def _count(self, name: str, logits: Tensor, labels: Tensor) -> None:
        right = (logits.argmax(1) == labels).sum()
        counts = torch.stack([right, right.new_tensor(len(labels))]).to(torch.float64)
        self._counts[name] = counts if name not in self._counts else self._counts[name] + counts

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts.pop("train", None)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        z = getattr(pl_module, "step_latents", None)
        if z is None or self.head is None:
            return
        datamodule = trainer.datamodule
        labels = datamodule.labels_at("train", datamodule.train_batch_indices(batch_idx)).to(z.device)
        self.head.train()
        with torch.enable_grad():
            logits = self.head(z.detach().float())
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self._count("train", logits.detach(), labels)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts.pop("val", None)
        loader = trainer.val_dataloaders
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        # the order the loader serves the split in (sequential; Lightning's DistributedSampler under DDP)
        self._val_order = torch.as_tensor(list(loader.sampler)) if loader is not None else None

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.head is None or trainer.sanity_checking or self._val_order is None:
            return
        size = trainer.datamodule.batch_size
        labels = trainer.datamodule.labels_at("val", self._val_order[batch_idx * size : (batch_idx + 1) * size])
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), pl_module.evaluation_protocol():
            z = pl_module.encode_images(batch)
        self.head.eval()
        self._count("val", self.head(z.float()), labels.to(z.device))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, key in (("val", "probe/acc"), ("train", "probe/train_acc")):
            counts = self._counts.get(name)
            if counts is None:
                continue
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            pl_module.log(key, (counts[0] / counts[1]).float(), **SAME_ON_EVERY_PROCESS)

    def state_dict(self) -> dict[str, Any]:
        if self.head is None or self.optimizer is None:
            return {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = state_dict or None
