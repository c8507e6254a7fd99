"""Plain torch building blocks, free of Lightning."""

from gon_lightning.nn.conv import Activation, ConvDecoder, ConvEncoder, Norm, make_activation
from gon_lightning.nn.siren import GaussianEncoding, NeRFEncoding, Siren, coordinate_grid

__all__ = [
    "Activation",
    "ConvDecoder",
    "ConvEncoder",
    "GaussianEncoding",
    "NeRFEncoding",
    "Norm",
    "Siren",
    "coordinate_grid",
    "make_activation",
]
