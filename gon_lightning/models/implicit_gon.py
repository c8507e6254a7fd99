"""The implicit GON: a SIREN over pixel coordinates, conditioned on the origin-step latent."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require
from gon_lightning.models.origin import OriginModel
from gon_lightning.nn.siren import Encoding, Siren, coordinate_grid, make_encoding

ImplicitLoss = Literal["mse", "bce"]


class ImplicitGON(OriginModel):
    """Implicit GON: pixel value = SIREN([encode(coordinate), z]), one output per channel.

    The image is a function of coordinates in [-1, 1]^2, so `render(z, size)` draws it at any resolution
    (super-resolution: train at 28x28, render at 64 or 128). Reference size: nz 32, widths [256] * 4 over
    2 coordinates + z, i.e. layers [34, 256, 256, 256, 256, 1]: 206,593 parameters.

    The loss per image SUMS over pixels and channels (squared error, or BCE on logits): a per-pixel mean
    makes the latent gradient H*W times smaller, and the origin step then barely leaves the origin. The
    reported metric (mse) is per pixel, as published.

    Other options: the origin step's (`OriginModel`) and the shared ones (`ImageModel`; norm_eval is moot: a
    SIREN has no BatchNorm).

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
        latent_modulation: also shift the phase of every sine layer by a linear map of z.
        loss: "mse" (output is the pixel value, clamped to [0, 1] for pictures and metrics) or "bce" (output
            is a logit; the pixel value is its sigmoid).
        learn_origin: start the inner step from a learned latent rather than from zero.
        inner_steps: gradient steps on the inner loss (1 is the paper's single step from the origin).
        inner_lr: size of each inner step (1 is the paper's z = z0 - grad).
        render_chunk: pixels per image evaluated at once where no gradient is taken (renders, and the decoding
            of evaluation and panels): bounds their memory at large sizes (a 1024 px render of 16 images holds
            16 GiB per layer at once otherwise) and gives the same images. None evaluates every pixel at once.
            Training steps always evaluate every pixel: their memory is the saved activations, 28 GiB at
            128 px and batch 64 (docs/gon_family.md, "Memory per batch").
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
        loss: ImplicitLoss = "mse",
        learn_origin: bool = False,
        inner_steps: int = 1,
        inner_lr: float = 1.0,
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
        positive_int(MODEL + "inner_steps", inner_steps)
        positive(MODEL + "inner_lr", inner_lr)
        if render_chunk is not None:
            positive_int(MODEL + "render_chunk", render_chunk)
        self.render_chunk = render_chunk
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        channels, height, width = self.image_shape
        if height != width:
            raise UserError(f"the implicit GON renders square images, got {height}x{width}")
        self.loss = loss
        self.encoding = make_encoding(encoding, num_frequencies, fourier_sigma)
        self.siren = Siren(self.encoding.out_features + nz, list(widths), channels, w0, nz if latent_modulation else 0)
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
        """The SIREN at encoded coordinates (P, E) for every latent: (B, P, C)."""
        inputs = torch.cat([coords.expand(len(z), -1, -1), z[:, None].expand(-1, len(coords), -1)], dim=-1)
        return self.siren(inputs, z[:, None])

    def to_image(self, raw: Tensor) -> Tensor:
        return raw.sigmoid() if self.loss == "bce" else raw.clamp(0, 1)

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        raw = self.render_raw(z, x.shape[-1])
        if self.loss == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(raw, x, reduction="none")
        else:
            per_pixel = (raw - x).square()
        return per_pixel.flatten(1).sum(1), self.to_image(raw.detach())

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.to_image(self.render_raw(z, self.image_shape[-1]))

    @torch.no_grad()
    def render(self, z: Tensor, size: int) -> Tensor:
        """Images (B, C, size, size) in [0, 1] of latents z at any resolution (super-resolution)."""
        return self.to_image(self.render_raw(z, size))
