"""What every learned prior shares: a LightningModule over a model's latents, on per-dimension standardised latents.

A prior is trained on the latents (N, nz) of a model's training split (post hoc: `LatentDataModule` serves them;
online: `OnlinePrior` feeds each training step's latents) and draws new ones with `sample(n)`, in the model's own
latent space, for the model's decoder. The standardisation statistics (mean and std per dimension of the training
latents) are buffers, so checkpoints and exports carry them: a GON's latents are ~350 in std after 10 quickstart
epochs, and a network with a unit-scale time embedding learns nothing useful on them unstandardised.

A post-hoc prior's checkpoint names and fingerprints the model checkpoint its latents came from (`source`: path,
sha256, model class, nz), so the pair is one generative model wherever a checkpoint is accepted
(`gon_lightning.priors.pair`).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require

#: the checkpoint key a prior's run writes: where its latents came from
SOURCE_KEY = "gon_lightning_prior_source"
STD_FLOOR = 1e-8  # a dimension the model never uses (std 0) stays 0 after unstandardising, instead of NaN


def cosine_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def latents_of(batch: Any) -> Tensor:
    """The latents of a batch: LatentDataModule's dict, a (latents, ...) tuple, or a bare tensor."""
    if isinstance(batch, dict):
        return batch["latents"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


class LatentPrior(pl.LightningModule, ABC):
    """Base of the learned priors (abstract). Subclasses implement `loss` (on standardised latents) and
    `sample_standardised`, and name their sampler (`sampler_name`: what `--sampler` calls it on the model).

    Args:
        latent_size: the latents' size (the model's nz); linked from the data (LatentDataModule's `nz`) by the CLI.
            Not named `nz`: a link into `model.init_args.nz` would make every image model's nz a link target, which
            the saved config.yaml leaves out.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up steps before the cosine decay (to 0 at the run's last step).
    """

    sampler_name: ClassVar[str]
    #: what a prior run's checkpoints keep (best) and are named by, in place of the image models' val/sse
    checkpoint_monitor: ClassVar[tuple[str, str]] = ("val/loss", "step{step:06d}-val_loss{val/loss:.4f}")

    def __init__(
        self, latent_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 100
    ) -> None:
        super().__init__()
        positive_int(MODEL + "latent_size", latent_size)
        positive(MODEL + "lr", lr)
        require(weight_decay >= 0, MODEL + "weight_decay", weight_decay, ">= 0")
        require(isinstance(warmup_steps, int) and warmup_steps >= 0, MODEL + "warmup_steps", warmup_steps, ">= 0")
        self.save_hyperparameters()
        self.nz = latent_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.register_buffer("latent_mean", torch.zeros(latent_size))
        self.register_buffer("latent_std", torch.ones(latent_size))
        self.register_buffer("standardised", torch.zeros((), dtype=torch.bool))  # statistics set
        self.source: dict[str, Any] = {}  # the model checkpoint the latents came from (post hoc)

    # --- standardisation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_statistics(self, latents: Tensor) -> None:
        """Standardise by the per-dimension mean and std (float64 sums) of `latents` (N, nz)."""
        z = latents.detach().to("cpu", torch.float64)
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise UserError(f"{type(self).__name__} has latent_size {self.nz}, but the latents are {tuple(z.shape)}")
        if len(z) < 2:
            raise UserError(f"{type(self).__name__} needs two or more latents to standardise by, got {len(z)}")
        self.latent_mean.copy_(z.mean(0))
        self.latent_std.copy_(z.std(0).clamp_min(STD_FLOOR))
        self.standardised.fill_(True)

    def standardise(self, z: Tensor) -> Tensor:
        return (z.to(self.latent_mean.dtype) - self.latent_mean) / self.latent_std

    def unstandardise(self, x: Tensor) -> Tensor:
        return x * self.latent_std + self.latent_mean

    # --- the density ------------------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, x: Tensor, shard: tuple[int, int] = (0, 1), generator: torch.Generator | None = None) -> Tensor:
        """The training loss (a scalar) on a batch of standardised latents (B, nz).

        `shard` (rank, world size): under DDP `x` holds the rows rank, rank + world, ... of the global batch (as
        DistributedSampler deals them); a loss that draws noise draws it for the whole global batch from
        `generator` (the global one if None), which every rank holds in the same state, and takes its own rows, so
        DDP trains exactly as one process on the global batch."""

    @abstractmethod
    def sample_standardised(self, n: int) -> Tensor:
        """n standardised latents, drawn with the global generator (so a seed fixes them)."""

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n latents in the model's latent space (B, nz), drawn with the global generator."""
        if not bool(self.standardised):
            raise NotImplementedError(f"{type(self).__name__} has not been trained on any latents yet")
        return self.unstandardise(self.sample_standardised(n))

    # --- training -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before fitting: the standardisation statistics of the training split (unless restored) and the source
        of the latents, from the DataModule (`LatentDataModule`: `latents("train")`, `card`)."""
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        data_nz = getattr(data, "nz", None)
        if data_nz is not None and data_nz != self.nz:
            raise UserError(
                f"{type(self).__name__} has latent_size {self.nz}, but the latents of {data_nz} dimensions: "
                f"a prior of another latent size (drop model.init_args.latent_size; the CLI links it from the data)"
            )
        card = getattr(data, "card", None)
        if isinstance(card, dict) and not self.source:
            self.source = source_of(card)
        if stage == "fit" and not bool(self.standardised) and hasattr(data, "latents"):
            self.set_statistics(data.latents("train"))

    def step_generator(self, device: torch.device) -> torch.Generator:
        """The noise of training step k: a generator seeded with the run's seed and k, so every rank draws the same
        and a resumed run the same as an uninterrupted one, whatever else used the global generator."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + self.global_step
        return torch.Generator(device).manual_seed(seed % 2**63)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self.standardise(latents_of(batch))
        loss = self.loss(x, (self.global_rank, self.trainer.world_size), self.step_generator(x.device))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = self.standardise(latents_of(batch))
        # the same noise at every validation (a comparable figure), drawn beside the global generator: validation,
        # the sanity check's too, leaves the run's random stream as it was, so a resumed run continues it exactly
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            loss = self.loss(x)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.warmup_steps, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_warmup(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- what a checkpoint says of the prior ------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The class path and constructor arguments that rebuild this prior (for a model carrying it)."""
        init_args = {key: value for key, value in dict(self.hparams).items() if not key.startswith("_")}
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": init_args}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SOURCE_KEY] = dict(self.source)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.source = dict(checkpoint.get(SOURCE_KEY) or {})


def source_of(card: dict[str, Any]) -> dict[str, Any]:
    """What a prior records of the latents it was trained on, from an encoding card (`gon_lightning.latents`)."""
    checkpoint, model = card.get("checkpoint") or {}, card.get("model") or {}
    return {
        "checkpoint": checkpoint.get("path"),
        "sha256": checkpoint.get("sha256"),
        "model": model.get("class_path"),
        "nz": model.get("nz"),
    }
