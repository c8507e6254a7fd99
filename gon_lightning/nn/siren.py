"""SIREN (Sitzmann et al., 2020) over pixel coordinates, and positional encodings of those coordinates."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from gon_lightning.errors import UserError

Encoding = Literal["none", "nerf", "gaussian"]
Modulation = Literal["phase", "shift"]


def coordinate_grid(size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(size * size, 2) pixel-centre coordinates in [-1, 1]^2, row-major (y, x): the same square at any size."""
    axis = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([y, x], dim=-1).reshape(-1, 2)


class NeRFEncoding(nn.Module):
    """NeRF's encoding: [c, sin(2^k pi c), cos(2^k pi c)] for k < num_frequencies."""

    def __init__(self, in_features: int = 2, num_frequencies: int = 6) -> None:
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False)
        self.out_features = in_features * (1 + 2 * num_frequencies)

    def forward(self, coords: Tensor) -> Tensor:
        angles = (coords[..., None] * self.frequencies).flatten(-2)
        return torch.cat([coords, angles.sin(), angles.cos()], dim=-1)


class GaussianEncoding(nn.Module):
    """Random Fourier features (Tancik et al., 2020): [sin(2 pi B c), cos(2 pi B c)], B ~ N(0, sigma^2).

    B is a buffer, so a checkpoint restores the same features.
    """

    def __init__(self, in_features: int = 2, num_frequencies: int = 64, sigma: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("projection", torch.randn(num_frequencies, in_features) * sigma)
        self.out_features = 2 * num_frequencies

    def forward(self, coords: Tensor) -> Tensor:
        angles = 2 * math.pi * coords @ self.projection.T
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def make_encoding(kind: Encoding, num_frequencies: int, sigma: float) -> nn.Module:
    if kind == "none":
        encoding = nn.Identity()
        encoding.out_features = 2
        return encoding
    if kind == "nerf":
        return NeRFEncoding(2, num_frequencies)
    if kind == "gaussian":
        return GaussianEncoding(2, num_frequencies, sigma)
    raise UserError(f"model.init_args.encoding must be 'none', 'nerf' or 'gaussian', got {kind!r}")


class SineLayer(nn.Module):
    """sin(w0 * (W x + b) + shift) with SIREN's initialisation: U(-1/n, 1/n) first, U(+-sqrt(6/n)/w0) after."""

    def __init__(self, in_features: int, out_features: int, w0: float = 30.0, first: bool = False) -> None:
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_features, out_features)
        bound = 1 / in_features if first else math.sqrt(6 / in_features) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor, shift: Tensor | None = None) -> Tensor:
        h = self.w0 * self.linear(x)
        return torch.sin(h if shift is None else h + shift)


class Siren(nn.Module):
    """SIREN: sine layers of the given widths and a linear output layer (SIREN-initialised).

    With `modulation_features` > 0, a linear map of that input (the latent) shifts every sine layer (latent
    modulation), on top of whatever the input already holds. `modulation` says where: "phase" adds the shift to the
    phase, sin(w0 (W x + b) + s); "shift" adds it before the frequency factor, sin(w0 (W x + b + s)), functa's
    shift-only FiLM modulation, whose map starts with a zero bias (the zero latent leaves the SIREN unmodulated).
    """

    def __init__(
        self,
        in_features: int,
        widths: list[int],
        out_features: int,
        w0: float = 30.0,
        modulation_features: int = 0,
        modulation: Modulation = "phase",
    ) -> None:
        super().__init__()
        if not widths:
            raise UserError("model.init_args.widths must name at least one hidden layer")
        features = [in_features, *widths]
        self.layers = nn.ModuleList(
            SineLayer(n_in, n_out, w0, first=i == 0)
            for i, (n_in, n_out) in enumerate(zip(features[:-1], widths, strict=True))
        )
        self.out = nn.Linear(widths[-1], out_features)
        with torch.no_grad():
            bound = math.sqrt(6 / widths[-1]) / w0
            self.out.weight.uniform_(-bound, bound)
        self.modulation = nn.Linear(modulation_features, sum(widths)) if modulation_features else None
        self.shift_scale = w0 if modulation == "shift" else None  # w0 (W x + b + s) = w0 (W x + b) + w0 s
        if self.modulation is not None and self.shift_scale is not None:
            with torch.no_grad():
                self.modulation.bias.zero_()

    def forward(self, x: Tensor, latent: Tensor | None = None) -> Tensor:
        """x (..., in_features); latent (..., modulation_features) broadcastable to x, when modulated."""
        shifts: list[Tensor | None] = [None] * len(self.layers)
        if self.modulation is not None:
            if latent is None:
                raise ValueError("a modulated SIREN needs the latent")
            modulations = self.modulation(latent)
            if self.shift_scale is not None:
                modulations = modulations * self.shift_scale
            shifts = list(modulations.split([layer.linear.out_features for layer in self.layers], -1))
        for layer, shift in zip(self.layers, shifts, strict=True):
            x = layer(x, shift)
        return self.out(x)
