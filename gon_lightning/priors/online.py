"""`OnlinePrior`: a learned prior trained during the model's own `fit`, one small step per training batch.

Each training step of a latent model leaves its batch's detached latents in `step_latents`; this callback takes
one optimiser step of its own prior on them (its own AdamW, its own seeded noise: the model's training, its RNG
stream included, is the same bit for bit with or without it). The prior is attached to the model from the start
(`LatentModel.attach_prior`), so every checkpoint carries it and `--images.sampler diffusion` can show it; the
model's own optimiser and DistributedDataParallel leave it alone, and under DDP its gradients are averaged here.

The latents drift while the model trains (a GON's grow from ~1e-3 to ~350 in std over the quickstart), so the
standardisation follows them: during the first epoch the statistics of the latents seen so far, afterwards those
of the last finished epoch (all ranks' latents). docs/priors.md compares it with the post-hoc prior.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from gon_lightning.errors import UserError, positive
from gon_lightning.priors.base import STD_FLOOR, LatentPrior, cosine_warmup
from gon_lightning.priors.flow_matching import FlowMatchingPrior
from gon_lightning.priors.normalizing_flow import NormalizingFlowPrior

PRIORS = {"diffusion": FlowMatchingPrior, "flow": NormalizingFlowPrior}
OPTION = "trainer.callbacks.OnlinePrior."


class OnlinePrior(Callback):
    """Train a learned prior on the model's training latents while the model trains (`--trainer.callbacks+=
    OnlinePrior`); the model then samples through it (`sample(n)`, `--sampler diffusion`).

    Args:
        sampler: the prior: `diffusion` (FlowMatchingPrior) or `flow` (NormalizingFlowPrior).
        prior_args: the prior's options besides nz (taken from the model), e.g. `{hidden: 256, depth: 2}`. The
            default network is smaller than the post-hoc default (hidden 192, 2 residual blocks): its step is under
            5% of a quickstart GON step on a CPU (docs/priors.md has what it costs and reaches).
        lr: the prior's AdamW learning rate (warm-up, then cosine decay over the run's steps).
        warmup_steps: steps of linear learning-rate warm-up.
    """

    def __init__(
        self,
        sampler: str = "diffusion",
        prior_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        warmup_steps: int = 100,
    ) -> None:
        if sampler not in PRIORS:
            raise UserError(f"{OPTION}sampler {sampler!r}: one of {', '.join(PRIORS)}")
        positive(OPTION + "lr", lr)
        self.sampler = sampler
        defaults = {"hidden": 192, "depth": 2} if sampler == "diffusion" else {}
        self.prior_args = {**defaults, **(prior_args or {})}
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.optimizer: torch.optim.Optimizer | None = None
        self._restored: dict[str, Any] | None = None
        self._sums: Tensor | None = None  # this epoch's (count, sum, sum of squares) of latents, float64
        self._steps = 0
        self._total_steps = 1

    def prior(self, pl_module: pl.LightningModule) -> LatentPrior:
        return pl_module.priors[self.sampler]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(pl_module, "attach_prior"):
            raise UserError(f"OnlinePrior: {type(pl_module).__name__} has no latents to learn a prior over")
        with torch.random.fork_rng(devices=[]):  # same initial prior on every rank, the model's RNG untouched
            torch.manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)))
            prior = PRIORS[self.sampler](
                latent_size=pl_module.nz, lr=self.lr, warmup_steps=self.warmup_steps, **self.prior_args
            )
        pl_module.attach_prior(prior)  # before the checkpoint's weights are restored into it, and before DDP

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        prior = self.prior(pl_module)  # the module a restored checkpoint loaded into
        # the fused kernel: a for-loop AdamW over the small network's tensors was 40% of its step on a CPU
        fused = prior.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(prior.parameters(), lr=self.lr, weight_decay=prior.weight_decay, fused=fused)
        self._total_steps = max(1, int(trainer.estimated_stepping_batches))  # the schedule's length, read once
        if self._restored is not None:
            self.optimizer.load_state_dict(self._restored["optimizer"])
            self._steps = self._restored["steps"]
            self._sums = self._restored["sums"]
            self._restored = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sums is not None and trainer.fit_loop.epoch_loop.batch_progress.current.ready == 0:
            self._sums = None  # a new epoch (not one resumed mid-way): its own statistics

    @torch.no_grad()
    def _standardisation(self, trainer: pl.Trainer, prior: LatentPrior, z: Tensor) -> None:
        z = z.to(torch.float64)
        batch = torch.cat([z.new_tensor([len(z)]), z.sum(0), z.square().sum(0)])
        self._sums = batch if self._sums is None else self._sums + batch
        if not bool(prior.standardised):  # the first epoch: the latents seen so far
            self._set_statistics(prior, self._sums)

    @staticmethod
    def _set_statistics(prior: LatentPrior, sums: Tensor) -> None:
        nz = prior.nz
        count, total, squares = sums[0], sums[1 : nz + 1], sums[nz + 1 :]
        if count < 2:
            return
        mean = total / count
        var = ((squares - count * mean.square()) / (count - 1)).clamp_min(0)
        prior.latent_mean.copy_(mean)
        prior.latent_std.copy_(var.sqrt().clamp_min(STD_FLOOR))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        z = getattr(pl_module, "step_latents", None)
        if z is None or self.optimizer is None:
            return
        prior = self.prior(pl_module)
        self._standardisation(trainer, prior, z)
        world, rank = trainer.world_size, trainer.global_rank
        # its own noise, a function of the seed, the step and the rank: the model's RNG stream is left alone
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + self._steps * world + rank
        generator = torch.Generator(z.device).manual_seed(seed % 2**63)
        total = self._total_steps
        factor = cosine_warmup(self._steps, total, min(self.warmup_steps, total // 10))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor
        with torch.enable_grad():
            loss = prior.loss(prior.standardise(z.detach()), generator=generator)
            loss.backward()
        if world > 1:
            params = [p for p in prior.parameters() if p.grad is not None]
            flat = trainer.strategy.reduce(torch.cat([p.grad.flatten() for p in params]), reduce_op="mean")
            for p, grad in zip(params, flat.split([p.numel() for p in params]), strict=True):
                p.grad.copy_(grad.view_as(p))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sums is None:
            return
        sums = trainer.strategy.reduce(self._sums, reduce_op="sum") if trainer.world_size > 1 else self._sums
        prior = self.prior(pl_module)
        self._set_statistics(prior, sums)  # the finished epoch's latents standardise the next epoch's steps
        prior.standardised.fill_(True)
        self._sums = None

    def state_dict(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {"optimizer": optimizer, "steps": self._steps, "sums": self._sums}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("optimizer") is not None:
            self._restored = dict(state_dict)
