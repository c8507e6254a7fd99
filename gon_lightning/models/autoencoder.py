"""Convolutional autoencoder baseline: the GON's decoder plus the mirrored encoder (twice the GON's parameters)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gon_lightning.errors import MODEL, positive_int
from gon_lightning.models.base import ConvNetModel
from gon_lightning.models.gon import paper_loss
from gon_lightning.models.latent import LatentModel
from gon_lightning.nn import ConvDecoder, ConvEncoder


class ConvAutoencoder(ConvNetModel, LatentModel):
    """Encoder (images -> nz) and decoder (nz -> images) trained on the GON paper's loss. Samples decode
    latents drawn from a Gaussian (`gaussian`, the default) or a Gaussian mixture (`gmm`) fitted to the encoded
    training split (models/latent.py). Other options: the networks' (`ConvNetModel`), the samplers' (`LatentModel`)
    and the shared ones (`ImageModel`).

    Args:
        nz: latent size.
    """

    def __init__(self, nz: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "nz", nz)
        channels, height, _ = self.image_shape
        self.nz = nz
        self.encoder = ConvEncoder(nz, self.ngf, channels, height, self.activation, self.norm)
        self.decoder = ConvDecoder(nz, self.ngf, channels, height, self.activation, self.norm)

    def encode_images(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        x_hat = self.decoder(self.encoder(x))
        loss = paper_loss(x_hat, x).mean()
        self.log_train(loss, x_hat, x)
        return loss
