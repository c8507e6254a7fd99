"""Meta-SGD (Li et al., 2017): inner-loop step sizes learned with the model, one per latent dimension.

functa (Dupont et al., 2022) encodes with 3 inner steps whose step sizes are learned this way, drawn at first
uniformly in [0.005, 0.1] and clipped to [0, 1] where used. Here they are clipped at 0 only (a step size of the
paper's GON is 1 and may grow past it): a negative step would climb the inner loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: functa's initial range of the learned step sizes
FUNCTA_INIT = (0.005, 0.1)


class MetaSGD(nn.Module):
    """Learned step sizes (nz,), used as `clamp_min(raw, 0)`: the origin step's `step_size`, a tensor with a graph,
    so the outer loss trains them through every inner step.

    Args:
        nz: latent size (one step size per dimension).
        init: the initial step size of every dimension, or a range (low, high) they are drawn from uniformly. The
            draw uses the global generator and then restores it, so the rest of the model initialises as it does
            without Meta-SGD (same seed, same decoder).
    """

    def __init__(self, nz: int, init: float | tuple[float, float]) -> None:
        super().__init__()
        if isinstance(init, (int, float)):
            value = torch.full((nz,), float(init))
        else:
            with torch.random.fork_rng(devices=[]):
                value = torch.empty(nz).uniform_(*init)
        self.raw = nn.Parameter(value)

    def forward(self) -> Tensor:
        # clamp's gradient is zero below 0: a size pushed below 0 stays at 0 (functa's clip does the same)
        return self.raw.clamp_min(0)

    def extra_repr(self) -> str:
        return f"nz={len(self.raw)}"
