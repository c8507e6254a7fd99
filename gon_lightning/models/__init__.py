"""One LightningModule per file; the GON family shares the origin step in `origin.py`."""

from gon_lightning.models.autoencoder import ConvAutoencoder
from gon_lightning.models.base import ImageModel
from gon_lightning.models.detached_gon import DetachedGON
from gon_lightning.models.gon import GON
from gon_lightning.models.gopt import GenerativeOptimizationNetwork
from gon_lightning.models.implicit_gon import ImplicitGON
from gon_lightning.models.origin import OriginModel
from gon_lightning.models.vae import VAE
from gon_lightning.models.variational_gon import VariationalGON

__all__ = [
    "GON",
    "VAE",
    "ConvAutoencoder",
    "DetachedGON",
    "GenerativeOptimizationNetwork",
    "ImageModel",
    "ImplicitGON",
    "OriginModel",
    "VariationalGON",
]
