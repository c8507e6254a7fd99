"""Gradient Origin Network (Bond-Taylor & Willcocks, ICLR 2021) with the paper's convolutional decoder."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gon_lightning.models.base import ConvNetModel
from gon_lightning.models.inner_loop import InnerLoopModel


def paper_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per sample: squared error summed over channels, averaged over pixels (the reference's loss)."""
    return (x_hat - x).square().sum(1).flatten(1).mean(1)


class GON(ConvNetModel, InnerLoopModel):
    """GON: the latent is the negative gradient of the reconstruction loss at the origin, decoded by the paper's
    convolutional decoder (or your own: `decoder`). Options: the decoder's (`ConvNetModel`), the inner loop's
    (`InnerLoopModel`: steps, step size, Meta-SGD), the origin step's (`OriginModel`) and the shared ones
    (`ImageModel`); `--model.help GON` lists them all.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decoder = self.make_decoder()

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        x_hat = self.decode_latents(z)
        return paper_loss(x_hat, x), x_hat
