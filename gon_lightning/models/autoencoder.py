"""Convolutional autoencoder baseline: the GON's decoder plus the mirrored encoder (twice the GON's parameters)."""

from __future__ import annotations

from torch import Tensor

from gon_lightning.models.base import ImageModel, NormEval
from gon_lightning.models.gon import paper_loss
from gon_lightning.nn import ConvDecoder, ConvEncoder, Norm
from gon_lightning.nn.conv import Activation


class ConvAutoencoder(ImageModel):
    """Encoder (images -> nz) and decoder (nz -> images) trained on the GON paper's loss.

    Args:
        nz: latent size.
        ngf: width of encoder and decoder.
        activation, norm: of both networks (see `GON`).
        image_shape, lr, norm_eval: see `ImageModel`.
    """

    def __init__(
        self,
        nz: int = 256,
        ngf: int = 16,
        activation: Activation = "elu",
        norm: Norm = "batch",
        image_shape: tuple[int, int, int] = (1, 32, 32),
        lr: float = 2e-4,
        norm_eval: NormEval = "batch",
    ) -> None:
        super().__init__(image_shape=image_shape, lr=lr, norm_eval=norm_eval)
        self.save_hyperparameters()
        channels, height, _ = self.image_shape
        self.nz = nz
        self.encoder = ConvEncoder(nz, ngf, channels, height, activation, norm)
        self.decoder = ConvDecoder(nz, ngf, channels, height, activation, norm)

    def encode_images(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        x_hat = self.decoder(self.encoder(x))
        loss = paper_loss(x_hat, x).mean()
        self.log_train(loss, x_hat, x)
        return loss
