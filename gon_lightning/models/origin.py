"""The origin step shared by the GON family, written once.

The latent of x is the negative gradient, at the origin z0 = 0, of the inner loss of decoding z0:
    z = z0 - d inner(F(z0), x) / d z0
and the model is trained on the outer loss of F(z). Keeping the graph of that gradient
(create_graph=True) trains F through the second-order term; the detached GON drops it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from gon_lightning.errors import UserError
from gon_lightning.models.base import ImageModel, NormEval

InnerReduction = Literal["mean", "sum"]


class OriginModel(ImageModel):
    """Base of the GON family. Subclasses implement `latent_loss` and `decode_latents`.

    Args:
        nz: latent size.
        inner_reduction: how the inner loss combines the batch. "mean" is the paper's, and makes each
            latent scale with 1/batch size; "sum" makes latents independent of the batch (DESIGN trap 2).
        init_sigma: standard deviation of noise added to the origin (0 is the origin; the paper's
            ablation shows any noise hurts).
        detach_latent: drop the second-order term (the detached-GON ablation).
    """

    def __init__(
        self,
        nz: int,
        inner_reduction: InnerReduction = "mean",
        init_sigma: float = 0.0,
        detach_latent: bool = False,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        lr: float = 2e-4,
        norm_eval: NormEval = "batch",
    ) -> None:
        super().__init__(image_shape=image_shape, lr=lr, norm_eval=norm_eval)
        if inner_reduction not in ("mean", "sum"):
            raise UserError(f"model.inner_reduction must be 'mean' or 'sum', got {inner_reduction!r}")
        self.nz = nz
        self.inner_reduction = inner_reduction
        self.init_sigma = init_sigma
        self.detach_latent = detach_latent

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Decode z; return (loss per sample of shape (B,), reconstruction)."""
        raise NotImplementedError

    def initial_latent(self, batch_size: int) -> Tensor:
        z0 = torch.zeros(batch_size, self.nz, device=self.device, dtype=self.dtype)
        if self.init_sigma:
            z0.normal_(0.0, self.init_sigma)
        return z0.requires_grad_()

    def encode(self, x: Tensor, create_graph: bool) -> Tensor:
        """The origin step: one gradient step on the inner loss, away from the origin."""
        if torch.is_inference_mode_enabled():
            raise UserError(
                "GON-family models take gradients during evaluation; run with trainer.inference_mode: false "
                "(the gon-lightning CLI's default)"
            )
        with torch.enable_grad():
            z0 = self.initial_latent(len(x))
            inner, _ = self.latent_loss(z0, x)
            inner = inner.sum() if self.inner_reduction == "sum" else inner.mean()
            scale = self._inner_loss_scale(inner)
            if scale is None:
                (grad,) = torch.autograd.grad(inner, z0, create_graph=create_graph)
            else:
                (grad,) = torch.autograd.grad(inner * scale, z0, create_graph=create_graph)
                grad = grad / scale
        return z0.detach() - grad  # the graph, when kept, lives in grad

    def _inner_loss_scale(self, inner: Tensor) -> Tensor | None:
        """The fp16 loss scale as a 0-dim device tensor, or None when no GradScaler is active.

        Lightning scales only the loss `training_step` returns, so under `precision="16-mixed"` the inner
        gradient would be taken unscaled and underflow in fp16 (DESIGN trap 3). Scaling the inner loss by the
        scaler's own scale and dividing the gradient back keeps it in range; an overflow makes the latents, the
        outer loss and so the parameter gradients non-finite, and the scaler then skips the step and lowers its
        scale as for any overflow. The scale stays a tensor: no host synchronisation. bf16 needs no scaler.
        """
        trainer = self._trainer  # not `self.trainer`: the model may run without one
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None
        if scaler is None or not scaler.is_enabled():
            return None
        return scaler.scale(torch.ones((), device=inner.device)).reshape(())

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
                "batch statistics, as at batch size per process), or use model.norm 'group' or 'none', or "
                "model.detach_latent true"
            )

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        z = self.encode(x, create_graph=not self.detach_latent)
        outer, x_hat = self.latent_loss(z, x)
        loss = outer.mean()
        self.log_train(loss, x_hat, x)
        return loss

    def encode_images(self, x: Tensor) -> Tensor:
        return self.encode(x, create_graph=False)

    def compile_targets(self) -> list[str]:
        if not self.detach_latent:  # DESIGN trap 5: aot_autograd cannot compile a double backward
            raise UserError(
                f"{type(self).__name__} differentiates its inner gradient (create_graph=True), a double backward "
                "that torch.compile cannot compile: remove CompileModules from trainer.callbacks, or set "
                "model.init_args.detach_latent: true (the detached-GON ablation, which compiles)"
            )
        return super().compile_targets()
