"""Pixel subsampling (COIN++, GradNCP): a training step that sees a random subset of each image's pixels.

A coordinate network evaluates every pixel independently, so a step over a fraction f of the pixels holds f of
the activations (the memory of an implicit-GON step is almost all saved activations). Each image gets its own
subset, drawn afresh every step; evaluation sees every pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_count(pixels: int, fraction: float) -> int:
    """How many of `pixels` a step samples: `fraction` of them, rounded, at least one."""
    return max(1, round(fraction * pixels))


def random_pixels(batch: int, pixels: int, fraction: float, device: torch.device | None = None) -> Tensor:
    """(batch, k) indices into the flattened pixels, k = `pixel_count(pixels, fraction)`, distinct within a row
    and drawn uniformly (the global generator: seeded runs repeat)."""
    return torch.rand(batch, pixels, device=device).argsort(dim=1)[:, : pixel_count(pixels, fraction)]


def gather_pixels(images: Tensor, index: Tensor) -> Tensor:
    """The pixels `index` (B, k) picks from `images` (B, C, H, W): (B, C, k)."""
    flat = images.flatten(2)
    return flat.gather(2, index[:, None].expand(-1, flat.shape[1], -1))
