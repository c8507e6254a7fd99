"""The GON family's LightningModule base: the origin step (written once, `gon_lightning.nn.origin.origin_step`)
made into training, evaluation and sampling.

The latent of x is the negative gradient, at the origin z0 = 0, of the inner loss of decoding z0:
    z = z0 - d inner(F(z0), x) / d z0
and the model is trained on the outer loss of F(z). Keeping the graph of that gradient
(create_graph=True) trains F through the second-order term; the detached GON drops it.

Hooks for the family: `initial_latent` (the implicit GON's learnable origin), `inner_steps`/`inner_lr`
(several gradient steps instead of one), and the `gaussian` sampler: a full-covariance Gaussian fitted to the
training latents while training (kept as buffers, so it is saved in checkpoints). The `gmm` sampler is
`LatentModel`'s (models/latent.py).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from gon_lightning.errors import MODEL, UserError, positive_int, require
from gon_lightning.models.latent import LatentModel
from gon_lightning.nn.origin import InnerReduction, origin_step


class OriginModel(LatentModel):
    """Base of the GON family (abstract). Subclasses implement `latent_loss` and `decode_latents`.

    Args:
        nz: latent size (256 in the paper's convolutional GON).
        inner_reduction: how the inner loss combines the batch. "mean" is the paper's, and makes each
            latent scale with 1/batch size; "sum" makes latents independent of the batch (docs/design.md,
            "Latent scale and batch size").
        init_sigma: standard deviation of noise added to the origin (0 is the origin; the paper's
            ablation shows any noise hurts).
        detach_latent: drop the second-order term (the detached-GON ablation).

    Sampling: every latent seen by `training_step` is added to running sums (count, sum, sum of outer
    products), buffers reset at the start of each training epoch. At the end of an epoch they are frozen
    into `latent_mean`/`latent_cov`, the full-covariance Gaussian the `gaussian` sampler draws from (before the
    first epoch ends, the running sums are used). Buffers travel with checkpoints, so sampling works after a
    reload.
    """

    #: whether the `gaussian` sampler is tracked while training (the V-GON's is fitted lazily, as the autoencoders')
    fits_latent_gaussian = True
    lazy_samplers = ("gmm",)
    #: the paper's single step z = z0 - grad; a subclass may offer more steps, or smaller ones, as options
    inner_steps: int = 1
    inner_lr: float = 1.0

    def __init__(
        self,
        nz: int = 256,
        inner_reduction: InnerReduction = "mean",
        init_sigma: float = 0.0,
        detach_latent: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "nz", nz)
        require(inner_reduction in ("mean", "sum"), MODEL + "inner_reduction", inner_reduction, "'mean' or 'sum'")
        require(init_sigma >= 0, MODEL + "init_sigma", init_sigma, ">= 0")
        self.nz = nz
        self.inner_reduction = inner_reduction
        self.init_sigma = init_sigma
        self.detach_latent = detach_latent
        if self.fits_latent_gaussian:
            # float64: sums over a whole epoch of latents; (nz x nz) is small
            self.register_buffer("latent_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("latent_sum", torch.zeros(nz, dtype=torch.float64))
            self.register_buffer("latent_outer", torch.zeros(nz, nz, dtype=torch.float64))
            self.register_buffer("latent_mean", torch.zeros(nz, dtype=torch.float64))
            self.register_buffer("latent_cov", torch.zeros(nz, nz, dtype=torch.float64))
            self.register_buffer("latent_fitted", torch.zeros((), dtype=torch.float64))  # latents behind the fit

    @abstractmethod
    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Decode z; return (loss per sample of shape (B,), reconstruction)."""

    def initial_latent(self, batch_size: int) -> Tensor:
        """Where the inner optimisation starts: the origin (plus noise when init_sigma > 0)."""
        z0 = torch.zeros(batch_size, self.nz, device=self.device, dtype=self.dtype)
        if self.init_sigma:
            z0.normal_(0.0, self.init_sigma)
        return z0.requires_grad_()

    def encode(self, x: Tensor, create_graph: bool) -> Tensor:
        """The origin step (`gon_lightning.origin_step`): `inner_steps` gradient steps on the inner loss, away from
        `initial_latent`."""
        z0 = self.initial_latent(len(x))
        return origin_step(
            lambda z: self.latent_loss(z, x)[0],
            z0,
            steps=self.inner_steps,
            step_size=self.inner_lr,
            reduction=self.inner_reduction,
            create_graph=create_graph,
            loss_scale=self._inner_loss_scale(z0),
        ).latents

    def _inner_loss_scale(self, like: Tensor) -> Tensor | None:
        """The fp16 loss scale as a 0-dim device tensor, or None when no GradScaler is active.

        Lightning scales only the loss `training_step` returns, so under `precision="16-mixed"` the inner
        gradient would be taken unscaled and underflow in fp16 (docs/design.md, "fp16 inner-gradient scaling").
        Scaling the inner loss by the scaler's own scale and dividing the gradient back keeps it in range; an
        overflow makes the latents, the outer loss and so the parameter gradients non-finite, and the scaler then
        skips the step and lowers its scale as for any overflow. The scale stays a tensor: no host
        synchronisation. bf16 needs no scaler.
        """
        trainer = self._trainer  # not `self.trainer`: the model may run without one
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None
        if scaler is None or not scaler.is_enabled():
            return None
        return scaler.scale(torch.ones((), device=like.device)).reshape(())

    def setup(self, stage: str) -> None:
        # SyncBatchNorm has no double backward (pytorch#61222). Checked here, before the strategy converts the
        # BatchNorm layers (trainer.sync_batchnorm) and wraps the model, so the user sees this, not a DDP error.
        if stage != "fit" or self.detach_latent:
            return
        layer_sync = getattr(self.trainer.strategy, "_layer_sync", None)  # set by trainer.sync_batchnorm
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if any(isinstance(m, nn.SyncBatchNorm) for m in norms) or (layer_sync is not None and norms):
            raise UserError(
                f"{type(self).__name__} differentiates its inner gradient (create_graph=True), which SyncBatchNorm "
                "cannot do (pytorch#61222): drop trainer.sync_batchnorm (each process then normalises with its own "
                "batch statistics, as at batch size per process), or use model.init_args.norm 'group' or 'none', or "
                "model.init_args.detach_latent true"
            )

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        z = self.encode(x, create_graph=not self.detach_latent)
        outer, x_hat = self.latent_loss(z, x)
        loss = outer.mean()
        self.log_train(loss, x_hat, x)
        self.track_latents(z)
        self.step_latents = self.sampling_latents(z)
        return loss

    def sampling_latents(self, z: Tensor) -> Tensor:
        """The detached latents the samplers work in, from a training step's origin-step latents (the same here)."""
        return z.detach()

    def encode_images(self, x: Tensor) -> Tensor:
        return self.encode(x, create_graph=False).detach()

    def compile_targets(self) -> list[str]:
        if not self.detach_latent:  # aot_autograd cannot compile a double backward (docs/design.md, "Compile limits")
            raise UserError(
                f"{type(self).__name__} differentiates its inner gradient (create_graph=True), a double backward "
                "that torch.compile cannot compile: remove CompileModules from trainer.callbacks, or set "
                "model.init_args.detach_latent: true (the detached-GON ablation, which compiles)"
            )
        return super().compile_targets()

    # --- the Gaussian over training latents, for sampling -------------------------------------------------
    @torch.no_grad()
    def track_latents(self, z: Tensor) -> None:
        if not self.fits_latent_gaussian:
            return
        z = z.detach().to(torch.float64)
        # in place: `buffer += ...` would also assign the attribute, through nn.Module's slow __setattr__
        self.latent_count.add_(len(z))
        self.latent_sum.add_(z.sum(0))
        self.latent_outer.add_(z.T @ z)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.fits_latent_gaussian:
            for name in ("latent_count", "latent_sum", "latent_outer"):
                getattr(self, name).zero_()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # fitted right after the epoch's last batch, before validation: Lightning calls the callbacks' epoch-end
        # hooks (image panels) and saves checkpoints at validation end before the model's own on_train_epoch_end,
        # and they must hold this epoch's Gaussian, not the previous one
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.fit_latent_gaussian()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.fit_latent_gaussian()  # again, for epochs of unknown length (idempotent)

    def fit_latent_gaussian(self) -> None:
        """The sampling Gaussian := mean and covariance of the latents of this epoch's training batches."""
        if self.fits_latent_gaussian and self.latent_count >= 2:
            mean, cov = self._running_gaussian()
            self.latent_mean.copy_(mean)
            self.latent_cov.copy_(cov)
            self.latent_fitted.copy_(self.latent_count)

    def _running_gaussian(self) -> tuple[Tensor, Tensor]:
        n = self.latent_count
        mean = self.latent_sum / n
        cov = (self.latent_outer - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1)
        return mean, cov

    def latent_gaussian(self) -> tuple[Tensor, Tensor]:
        """Mean and a square root S (cov = S S^T) of the Gaussian fitted to the training latents: the last
        finished epoch's, else the current epoch's so far."""
        if self.latent_fitted > 0:
            mean, cov = self.latent_mean, self.latent_cov
        elif self.latent_count >= 2:
            mean, cov = self._running_gaussian()
        else:
            # NotImplementedError: the generation interface's "no such picture (yet)", which callers skip
            raise NotImplementedError(f"{type(self).__name__} has seen no training latents yet: train before sampling")
        # eigh rather than Cholesky: with fewer latents than nz the covariance is singular
        eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (cov + cov.T))
        return mean, eigenvectors * eigenvalues.clamp_min(0).sqrt()

    def sample_latents(self, n: int, sampler: str) -> Tensor:
        if sampler == "gaussian" and self.fits_latent_gaussian:  # the tracked Gaussian: the default
            mean, scale = self.latent_gaussian()
            return mean + torch.randn(n, self.nz, dtype=mean.dtype, device=mean.device) @ scale.T
        return super().sample_latents(n, sampler)
