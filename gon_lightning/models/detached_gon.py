"""The detached GON: the paper's ablation without the second-order term."""

from __future__ import annotations

from gon_lightning.models.base import NormEval
from gon_lightning.models.gon import GON
from gon_lightning.models.origin import InnerReduction
from gon_lightning.nn import Norm
from gon_lightning.nn.conv import Activation


class DetachedGON(GON):
    """GON whose latent is detached from the decoder's graph: z = -grad(inner).detach().

    The decoder then learns only from the outer loss at a fixed z, never from how z depends on it; the
    published runs show it clearly worse (MNIST test SSE 2.46 vs 0.124 after 500 epochs). A subclass rather
    than a flag so configs, run names and checkpoints say which model they hold. Arguments: see `GON`.
    """

    def __init__(
        self,
        nz: int = 256,
        ngf: int = 16,
        activation: Activation = "elu",
        norm: Norm = "batch",
        inner_reduction: InnerReduction = "mean",
        init_sigma: float = 0.0,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        lr: float = 2e-4,
        norm_eval: NormEval = "batch",
    ) -> None:
        super().__init__(nz, ngf, activation, norm, inner_reduction, init_sigma, True, image_shape, lr, norm_eval)
        self.save_hyperparameters()
