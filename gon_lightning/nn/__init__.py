"""Plain torch building blocks, free of Lightning."""

from gon_lightning.nn.conv import ConvDecoder, ConvEncoder, Norm, make_activation

__all__ = ["ConvDecoder", "ConvEncoder", "Norm", "make_activation"]
