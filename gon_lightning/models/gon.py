"""Gradient Origin Network (Bond-Taylor & Willcocks, ICLR 2021) with the paper's convolutional decoder."""

from __future__ import annotations

from torch import Tensor

from gon_lightning.models.base import NormEval
from gon_lightning.models.origin import InnerReduction, OriginModel
from gon_lightning.nn import ConvDecoder, Norm
from gon_lightning.nn.conv import Activation


def paper_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per sample: squared error summed over channels, averaged over pixels (the reference's loss)."""
    return (x_hat - x).square().sum(1).flatten(1).mean(1)


class GON(OriginModel):
    """GON: the latent is the negative gradient of the reconstruction loss at the origin.

    Args:
        nz: latent size.
        ngf: decoder width.
        activation: decoder activation (the paper's ablation: ELU > SELU > ReLU).
        norm: decoder normalisation. "batch" is the paper's; "group" or "none" evaluate the same in
            train and eval mode at any batch size (DESIGN trap 1).
        inner_reduction, init_sigma, detach_latent: see `OriginModel`.
        image_shape, lr, norm_eval: see `ImageModel`.
    """

    def __init__(
        self,
        nz: int = 256,
        ngf: int = 16,
        activation: Activation = "elu",
        norm: Norm = "batch",
        inner_reduction: InnerReduction = "mean",
        init_sigma: float = 0.0,
        detach_latent: bool = False,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        lr: float = 2e-4,
        norm_eval: NormEval = "batch",
    ) -> None:
        super().__init__(nz, inner_reduction, init_sigma, detach_latent, image_shape, lr, norm_eval)
        self.save_hyperparameters()
        channels, height, _ = self.image_shape
        self.decoder = ConvDecoder(nz, ngf, channels, height, activation, norm)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        x_hat = self.decode_latents(z)
        return paper_loss(x_hat, x), x_hat
