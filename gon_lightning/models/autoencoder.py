"""Convolutional autoencoder baseline: the GON's decoder plus the mirrored encoder (twice the GON's parameters)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gon_lightning.errors import MODEL, positive_int
from gon_lightning.models.base import ConvNetModel
from gon_lightning.models.gon import paper_loss
from gon_lightning.models.latent import LatentModel
from gon_lightning.nn import ConvEncoder
from gon_lightning.nn.networks import NetworkFactory


class ConvAutoencoder(ConvNetModel, LatentModel):
    """Encoder (images -> nz) and decoder (nz -> images) trained on the GON paper's loss. Samples decode
    latents drawn from a Gaussian (`gaussian`, the default) or a Gaussian mixture (`gmm`) fitted to the encoded
    training split (models/latent.py). Other options: the networks' (`ConvNetModel`), the samplers' (`LatentModel`)
    and the shared ones (`ImageModel`).

    Args:
        nz: latent size.
        encoder: your own encoder instead of the mirrored Conv2d one: a class given by class_path/init_args,
            called with (nz, image_shape) and its init_args, mapping images (B, C, H, W) in [0, 1] to (B, nz)
            (the VAE's features, on which its linear mean and log-variance heads sit); from Python also a built
            nn.Module. Unset: the paper's encoder.
    """

    def __init__(self, nz: int = 256, encoder: NetworkFactory | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "nz", nz)
        self.nz = nz
        self.encoder = self.make_network("encoder", encoder, ConvEncoder)
        self.decoder = self.make_decoder()

    def encode_images(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        self.step_latents = z.detach()
        loss = paper_loss(x_hat, x).mean()
        self.log_train(loss, x_hat, x)
        return loss
