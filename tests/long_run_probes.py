"""Models for the long-run tests (tests/test_long_runs.py), named by class path on `gon-lightning fit` command lines:
the paper's GON and V-GON made to diverge at a known step.

`diverge_at` is the global step (counted after the optimizer step, as Lightning counts) whose training step goes
non-finite; `diverging` says what goes non-finite there: "loss" (multiplied by NaN: its gradients are NaN too, and
Adam then makes every weight NaN) or "gradients" (the loss stays finite; the gradient of sqrt at 0 is infinite);
`every_step`: every step from it on (a run under 16-mixed whose GradScaler then skips every step).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gon_lightning.models import GON, ConvAutoencoder, VariationalGON


class _Diverging:
    def __init__(
        self,
        diverge_at: int = 5,
        diverging: Literal["loss", "gradients"] = "loss",
        every_step: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.diverge_at = diverge_at
        self.diverging = diverging
        self.every_step = every_step

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        loss = super().training_step(x, batch_idx)
        step = self.global_step + 1
        if step != self.diverge_at and not (self.every_step and step > self.diverge_at):
            return loss
        if self.diverging == "loss":
            return loss * float("nan")
        first = next(self.parameters())
        return loss + 0.0 * torch.sqrt(first.sum() * 0.0)  # the value: loss + 0; the gradient: 0 * inf = NaN


class DivergingGON(_Diverging, GON):
    """A GON whose step `diverge_at` goes non-finite."""


class DivergingVGON(_Diverging, VariationalGON):
    """A V-GON whose step `diverge_at` goes non-finite: its binary cross-entropy raises at the next step, fed the
    NaN the weights then decode."""


class DivergingAutoencoder(_Diverging, ConvAutoencoder):
    """A convolutional autoencoder whose step `diverge_at` goes non-finite (under 16-mixed on the CPU, the GON's
    second-order step overflows fp16 at every step: the GradScaler skips them all)."""
