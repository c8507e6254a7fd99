"""The detached GON: the paper's ablation without the second-order term."""

from __future__ import annotations

from typing import Any, Literal

from gon_lightning.errors import MODEL, require
from gon_lightning.models.gon import GON


class DetachedGON(GON):
    """GON whose latent is detached from the decoder's graph: z = -grad(inner).detach().

    The decoder then learns only from the outer loss at a fixed z, never from how z depends on it; the
    published runs show it clearly worse (MNIST test SSE 2.46 vs 0.124 after 500 epochs). A subclass rather
    than a flag so configs, run names and checkpoints say which model they hold. Other options: see `GON`.

    Args:
        detach_latent: always true, the point of this model (stated so its checkpoints, which record it,
            load; `GON` is the model with the second-order term).
    """

    def __init__(self, detach_latent: Literal[True] = True, **kwargs: Any) -> None:
        require(detach_latent is True, MODEL + "detach_latent", detach_latent, "true for DetachedGON (else use GON)")
        super().__init__(detach_latent=detach_latent, **kwargs)
