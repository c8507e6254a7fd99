"""Generative Optimization Network (Tuli et al., arXiv 2110.02912): a discriminator and no generator.

A sample is made by optimising an input: start from uniform noise in the data range and take Adam steps on
the pixels that raise the discriminator's "real" score, clamped to [0, 1], for at most `input_steps`
steps, stopping early once the score stops improving. The discriminator is then trained, as in a GAN, on
real images against those fakes (and, optionally, against the raw noise as well).

The input optimisation takes gradients with respect to the pixels only (`torch.autograd.grad(..., x)`),
so it leaves nothing on the discriminator's parameters and Lightning's automatic optimisation of the
discriminator step stays correct under any precision or strategy.

There is no encoder, so there is no reconstruction: validation and test log a sample-quality figure
instead. `sample_nn_sse` is the summed squared error (the papers' per-image SSE) from each generated image
to its nearest neighbour among up to `reference_size` training images; `real_nn_sse` is the same distance
for the held-out real images of the batch, and `nn_ratio = sample_nn_sse / real_nn_sse`. Noise scores far
above 1, samples as close to the training set as unseen real digits score about 1. It does not detect
memorisation (a copy of a training image scores 0) or a missing class; `docs/baselines.md` pairs it with a
frozen classifier's confidence and class spread.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require
from gon_lightning.models.base import SAME_ON_EVERY_PROCESS, ImageModel
from gon_lightning.nn.conv import hidden_widths


class Discriminator(nn.Module):
    """Image (B, C, S, S) -> real logit (B,): strided 4x4 convolutions with LeakyReLU, no normalisation.

    Widths C -> ndf -> 2 ndf -> 4 ndf -> 1 at 32 px; one more stride-2 layer (and doubling) per doubling of the
    side, as the encoder (`gon_lightning.nn.conv.hidden_widths`). No BatchNorm: the inputs being optimised would
    otherwise be scored against the statistics of the batch they share, and a fake's score would depend on its
    neighbours.
    """

    def __init__(self, channels: int, ndf: int, image_size: int = 32) -> None:
        super().__init__()
        widths = [channels, *reversed(hidden_widths(ndf, image_size))]
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


class GenerativeOptimizationNetwork(ImageModel):
    """Discriminator-only generation: samples are inputs optimised to look real to the discriminator.

    Args:
        ndf: discriminator width.
        input_steps: most Adam steps on the pixels per sample batch.
        input_lr: Adam learning rate of those steps (pixels live in [0, 1]).
        tolerance: early stopping; stop once a step improves the mean "real" loss of the batch by less.
        noise_negatives: also train the discriminator to reject the starting noise.
        reference_size: training images the nearest-neighbour sample-quality figure compares against.

    Other options: the shared ones (`ImageModel`; norm_eval is moot: the discriminator has no BatchNorm).
    """

    def __init__(
        self,
        ndf: int = 32,
        input_steps: int = 20,
        input_lr: float = 0.05,
        tolerance: float = 1e-3,
        noise_negatives: bool = True,
        reference_size: int = 2000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "ndf", ndf)
        positive_int(MODEL + "input_steps", input_steps)
        positive(MODEL + "input_lr", input_lr)
        require(tolerance >= 0, MODEL + "tolerance", tolerance, ">= 0")
        positive_int(MODEL + "reference_size", reference_size)
        channels, height, _ = self.image_shape
        self.discriminator = Discriminator(channels, ndf, height)
        self.input_steps = input_steps
        self.input_lr = input_lr
        self.tolerance = tolerance
        self.noise_negatives = noise_negatives
        self.reference_size = reference_size
        self.reference: Tensor | None = None
        self.quality = nn.ModuleDict(
            {
                stage: nn.ModuleDict({"sample_nn_sse": MeanMetric(), "real_nn_sse": MeanMetric()})
                for stage in ("val", "test")
            }
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.999))

    def noise(self, n: int) -> Tensor:
        return torch.rand(n, *self.image_shape, device=self.device)

    def optimise_inputs(self, start: Tensor) -> tuple[Tensor, int]:
        """Raise the discriminator's real score of `start` by Adam steps on the pixels; (fakes, steps taken)."""
        x = start.detach().clone().requires_grad_()
        optimiser = torch.optim.Adam([x], lr=self.input_lr)
        previous = None
        steps = 0
        with torch.enable_grad():
            for steps in range(1, self.input_steps + 1):  # noqa: B007 (steps is reported)
                loss = F.softplus(-self.discriminator(x)).mean()  # -log D(x): low when D calls x real
                (x.grad,) = torch.autograd.grad(loss, x)  # the pixels only: D's parameters keep no gradient
                optimiser.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
                value = loss.detach()
                if previous is not None and previous - value < self.tolerance:
                    break
                previous = value
        return x.detach(), steps

    samplers = ("optimised",)  # its only way of sampling: noise optimised against the discriminator

    def sample(self, n: int, sampler: str | None = None) -> Tensor:
        self.checked_sampler(sampler)
        return self.optimise_inputs(self.noise(n))[0]

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        noise = self.noise(len(x))
        fakes, steps = self.optimise_inputs(noise)
        real_logits = self.discriminator(x)
        fake_logits = self.discriminator(fakes)
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()  # BCE, real = 1, fake = 0
        if self.noise_negatives:
            loss = loss + F.softplus(self.discriminator(noise)).mean()
        batch_size = len(x)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/real_score", torch.sigmoid(real_logits.detach()).mean(), batch_size=batch_size)
        self.log("train/fake_score", torch.sigmoid(fake_logits.detach()).mean(), batch_size=batch_size)
        self.log("train/input_steps", float(steps), batch_size=batch_size)
        return loss

    # sample quality in place of reconstruction
    def reference_images(self) -> Tensor:
        """Up to `reference_size` training images, taken once per evaluation from the DataModule."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise UserError(
                "GenerativeOptimizationNetwork evaluates against the training set: run it with a DataModule"
            )
        batches, count = [], 0
        for batch in datamodule.train_dataloader():
            batch = datamodule.on_after_batch_transfer(batch.to(self.device), 0)
            batches.append(batch.flatten(1))
            count += len(batch)
            if count >= self.reference_size:
                break
        return torch.cat(batches)[: self.reference_size]

    def nearest_sse(self, images: Tensor) -> Tensor:
        """Per image: the SSE to the nearest reference image."""
        assert self.reference is not None
        return torch.cdist(images.flatten(1).float(), self.reference.float()).square().min(1).values

    def on_validation_epoch_start(self) -> None:
        self.reference = self.reference_images()

    def on_test_epoch_start(self) -> None:
        self.reference = self.reference_images()

    def _evaluate(self, x: Tensor, metrics: nn.ModuleDict, stage: str) -> Tensor:
        samples = self.sample(len(x))
        quality = self.quality[stage]
        quality["sample_nn_sse"].update(self.nearest_sse(samples))
        quality["real_nn_sse"].update(self.nearest_sse(x))
        return samples

    def evaluation_metrics(self, stage: str) -> nn.ModuleDict:
        return self.quality[stage]

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        self._evaluate(x, self.test_metrics, "test")  # samples, not reconstructions of x: nothing to return

    def _log_ratio(self, stage: str) -> None:
        quality = self.quality[stage]
        ratio = quality["sample_nn_sse"].compute() / quality["real_nn_sse"].compute()
        self.log(f"{stage}/nn_ratio", ratio, **SAME_ON_EVERY_PROCESS)  # of synced metrics

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_ratio("val")
        self.reference = None

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_ratio("test")
        self.reference = None

    def predict_step(self, x: Tensor, batch_idx: int) -> Tensor:
        return self.sample(len(x))
