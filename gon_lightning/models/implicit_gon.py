"""The implicit GON: a SIREN over pixel coordinates, conditioned on the origin-step latent."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require
from gon_lightning.models.base import per_image_sse
from gon_lightning.models.inner_loop import InnerLoopModel
from gon_lightning.nn.pixels import gather_pixels, random_pixels
from gon_lightning.nn.siren import Encoding, Siren, coordinate_grid, make_encoding

ImplicitLoss = Literal["mse", "bce"]
Conditioning = Literal["concat", "shift"]
PixelReduction = Literal["sum", "mean"]


class ImplicitGON(InnerLoopModel):
    """Implicit GON: pixel value = SIREN([encode(coordinate), z]), one output per channel.

    The image is a function of coordinates in [-1, 1]^2, so `render(z, size)` draws it at any resolution
    (super-resolution: train at 28x28, render at 64 or 128). Reference size: nz 32, widths [256] * 4 over
    2 coordinates + z, i.e. layers [34, 256, 256, 256, 256, 1]: 206,593 parameters.

    The loss per image SUMS over pixels and channels (squared error, or BCE on logits): a per-pixel mean
    makes the latent gradient H*W times smaller, and the origin step of size 1 then barely leaves the origin
    (`pixel_reduction` "mean" is for learned or larger step sizes, functa's). The reported metric (mse) is per
    pixel, as published.

    functa's network (Dupont et al., 2022) is `conditioning` "shift" with `inner_lr` "learned"
    (configs/functa_celeba64.yaml; docs/gon_family.md, "Several inner steps, Meta-SGD and the functa preset").

    Other options: the inner loop's (`InnerLoopModel`: inner_steps, inner_lr, Meta-SGD), the origin step's
    (`OriginModel`) and the shared ones (`ImageModel`; norm_eval is moot: a SIREN has no BatchNorm).

    Args:
        nz: latent size (32, the reference's).
        image_shape: (channels, height, width), square; linked from the DataModule by the CLI (28x28 MNIST in
            the reference).
        widths: widths of the sine layers.
        w0: SIREN frequency factor (30 in SIREN and the reference).
        encoding: positional encoding of the coordinates: "none" (raw coordinates, the reference), "nerf"
            (sin/cos at octave frequencies) or "gaussian" (random Fourier features).
        num_frequencies: NeRF octaves, or the number of Gaussian Fourier features.
        fourier_sigma: standard deviation of the Gaussian Fourier frequencies.
        latent_modulation: also shift the phase of every sine layer by a linear map of z (with conditioning
            "concat").
        conditioning: how z enters the SIREN: "concat" (the reference's: z beside the coordinates at the input)
            or "shift" (functa's shift-only FiLM modulations: the input is the coordinates alone, and a linear
            map of z shifts every sine layer's pre-activation, sin(w0 (W x + b + shift)); the map's bias starts
            at zero).
        loss: "mse" (output is the pixel value, clamped to [0, 1] for pictures and metrics) or "bce" (output
            is a logit; the pixel value is its sigmoid).
        pixel_reduction: how the loss per image combines pixels and channels: "sum" (the reference's) or
            "mean" (functa's and COIN++'s; the inner gradient is then H*W*C times smaller).
        learn_origin: start the inner step from a learned latent rather than from zero.
        train_pixel_fraction: the fraction of each image's pixels a training step evaluates, a random subset
            per image and step (COIN++'s and GradNCP's subsampling; 1: every pixel). The inner and outer loss
            of a step use the same subset; a summed loss is scaled by (all pixels / sampled), so it estimates
            the whole image's and the inner step keeps its size. Evaluation always uses every pixel.
        render_chunk: pixels per image evaluated at once where no gradient is taken (renders, and the decoding
            of evaluation and panels): bounds their memory at large sizes (a 1024 px render of 16 images holds
            16 GiB per layer at once otherwise) and gives the same images. None evaluates every pixel at once.
            Training steps evaluate every (sampled) pixel at once: their memory is the saved activations, 28 GiB
            at 128 px and batch 64 with every pixel (docs/gon_family.md, "Memory per batch").
    """

    def __init__(
        self,
        nz: int = 32,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        widths: list[int] = [256, 256, 256, 256],  # noqa: B006 (jsonargparse needs a literal default)
        w0: float = 30.0,
        encoding: Encoding = "none",
        num_frequencies: int = 6,
        fourier_sigma: float = 10.0,
        latent_modulation: bool = False,
        conditioning: Conditioning = "concat",
        loss: ImplicitLoss = "mse",
        pixel_reduction: PixelReduction = "sum",
        learn_origin: bool = False,
        train_pixel_fraction: float = 1.0,
        render_chunk: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nz=nz, image_shape=image_shape, **kwargs)
        require(loss in ("mse", "bce"), MODEL + "loss", loss, "'mse' or 'bce'")
        require(len(widths) > 0, MODEL + "widths", widths, "at least one hidden layer")
        for layer_width in widths:
            positive_int(MODEL + "widths", layer_width)
        positive(MODEL + "w0", w0)
        positive_int(MODEL + "num_frequencies", num_frequencies)
        positive(MODEL + "fourier_sigma", fourier_sigma)
        require(conditioning in ("concat", "shift"), MODEL + "conditioning", conditioning, "'concat' or 'shift'")
        if conditioning == "shift" and latent_modulation:
            raise UserError(
                f"{MODEL}latent_modulation: conditioning 'shift' already modulates every sine layer by z: drop it"
            )
        require(pixel_reduction in ("sum", "mean"), MODEL + "pixel_reduction", pixel_reduction, "'sum' or 'mean'")
        fraction_ok = isinstance(train_pixel_fraction, (int, float)) and 0 < train_pixel_fraction <= 1
        require(fraction_ok, MODEL + "train_pixel_fraction", train_pixel_fraction, "in (0, 1]")
        if render_chunk is not None:
            positive_int(MODEL + "render_chunk", render_chunk)
        self.render_chunk = render_chunk
        self.conditioning = conditioning
        self.pixel_reduction = pixel_reduction
        self.train_pixel_fraction = train_pixel_fraction
        self._train_pixels: Tensor | None = None  # (B, k): the pixels this training step samples, if it samples
        channels, height, width = self.image_shape
        if height != width:
            raise UserError(f"the implicit GON renders square images, got {height}x{width}")
        self.loss = loss
        self.encoding = make_encoding(encoding, num_frequencies, fourier_sigma)
        if conditioning == "shift":
            self.siren = Siren(self.encoding.out_features, list(widths), channels, w0, nz, modulation="shift")
        else:
            inputs = self.encoding.out_features + nz
            self.siren = Siren(inputs, list(widths), channels, w0, nz if latent_modulation else 0)
        self.origin = nn.Parameter(torch.zeros(nz)) if learn_origin else None

    def initial_latent(self, batch_size: int) -> Tensor:
        if self.origin is None:
            return super().initial_latent(batch_size)
        z0 = self.origin.expand(batch_size, -1)
        if self.init_sigma:
            z0 = z0 + self.init_sigma * torch.randn_like(z0)
        return z0 + 0  # a non-leaf: the origin's graph is kept and it learns through the outer loss

    def render_raw(self, z: Tensor, size: int) -> Tensor:
        """The network's output at size x size pixels, (B, C, size, size), with graph where grad is enabled."""
        coords = self.encoding(coordinate_grid(size, z.device, z.dtype))  # (P, E)
        chunk = None if torch.is_grad_enabled() else self.render_chunk
        parts = [self._siren_at(z, part) for part in coords.split(chunk or len(coords))]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, P, C)
        return out.transpose(1, 2).unflatten(2, (size, size)).contiguous()  # channel-major, as images are

    def _siren_at(self, z: Tensor, coords: Tensor) -> Tensor:
        """The SIREN at encoded coordinates, (P, E) shared or (B, P, E) per image, for every latent: (B, P, C)."""
        coords = coords.expand(len(z), -1, -1)
        if self.conditioning == "shift":
            return self.siren(coords, z[:, None])
        inputs = torch.cat([coords, z[:, None].expand(-1, coords.shape[1], -1)], dim=-1)
        return self.siren(inputs, z[:, None])

    def to_image(self, raw: Tensor) -> Tensor:
        return raw.sigmoid() if self.loss == "bce" else raw.clamp(0, 1)

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Loss per image and the reconstruction; in a subsampling training step, of the sampled pixels only:
        the reconstruction is then (B, C, k)."""
        if self._train_pixels is not None:
            return self._sampled_loss(z, x, self._train_pixels)
        raw = self.render_raw(z, x.shape[-1])
        return self._per_image(raw, x, 1.0), self.to_image(raw.detach())

    def _per_image(self, raw: Tensor, x: Tensor, scale: float) -> Tensor:
        if self.loss == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(raw, x, reduction="none")
        else:
            per_pixel = (raw - x).square()
        if self.pixel_reduction == "mean":
            return per_pixel.flatten(1).mean(1)
        summed = per_pixel.flatten(1).sum(1)
        return summed if scale == 1.0 else summed * scale

    def _sampled_loss(self, z: Tensor, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        coords = self.encoding(coordinate_grid(x.shape[-1], z.device, z.dtype))[index]  # (B, k, E)
        raw = self._siren_at(z, coords).transpose(1, 2)  # (B, C, k)
        scale = x[0, 0].numel() / index.shape[1]  # a sum over k pixels, scaled to estimate the sum over all
        return self._per_image(raw, gather_pixels(x, index), scale), self.to_image(raw.detach())

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        if self.train_pixel_fraction == 1:
            return super().training_step(x, batch_idx)
        # drawn once per step, so the inner steps and the outer loss see the same pixels
        self._train_pixels = random_pixels(len(x), x[0, 0].numel(), self.train_pixel_fraction, x.device)
        try:
            return super().training_step(x, batch_idx)
        finally:
            self._train_pixels = None

    def log_train(self, loss: Tensor, x_hat: Tensor, x: Tensor, sse: Tensor | None = None) -> None:
        if self._train_pixels is not None and sse is None:  # the sampled pixels' SSE, scaled to the whole image's
            index = self._train_pixels
            sse = per_image_sse(x_hat.detach(), gather_pixels(x, index)) * (x[0, 0].numel() / index.shape[1])
        super().log_train(loss, x_hat, x, sse)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.to_image(self.render_raw(z, self.image_shape[-1]))

    @torch.no_grad()
    def render(self, z: Tensor, size: int) -> Tensor:
        """Images (B, C, size, size) in [0, 1] of latents z at any resolution (super-resolution)."""
        return self.to_image(self.render_raw(z, size))
