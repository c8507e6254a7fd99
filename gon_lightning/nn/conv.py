"""The DCGAN-style 32x32 decoder of the GON paper and its mirrored encoder."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from torch import Tensor, nn

from gon_lightning.errors import UserError

Activation = Literal["elu", "relu", "selu"]
Norm = Literal["batch", "group", "none"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "selu": nn.SELU}


def make_activation(name: Activation) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise UserError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def make_norm(name: Norm, channels: int) -> nn.Module:
    """BatchNorm is the paper's choice; GroupNorm or none avoid its trouble at the origin (docs/design.md,
    "BatchNorm at the origin")."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(min(8, channels // 2), channels)
    if name == "none":
        return nn.Identity()
    raise UserError(f"norm must be 'batch', 'group' or 'none', got {name!r}")


def check_image_size(image_size: int) -> None:
    if image_size != 32:
        raise UserError(
            f"the convolutional models are built for 32x32 images, got image_size={image_size}; set data.image_size: 32"
        )


class ConvDecoder(nn.Module):
    """z (B, nz) -> image (B, C, 32, 32) in (0, 1): ConvTranspose2d 4x4 + norm + activation, sigmoid out."""

    def __init__(
        self,
        nz: int,
        ngf: int,
        channels: int,
        image_size: int = 32,
        activation: Activation = "elu",
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        widths = [nz, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(pairwise(widths)):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride, padding),
                make_norm(norm, c_out),
                make_activation(activation),
            ]
        layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class ConvEncoder(nn.Module):
    """The decoder mirrored: image (B, C, 32, 32) -> (B, nz)."""

    def __init__(
        self,
        nz: int,
        ngf: int,
        channels: int,
        image_size: int = 32,
        activation: Activation = "elu",
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        widths = [channels, ngf, ngf * 2, ngf * 4]
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), make_norm(norm, c_out), make_activation(activation)]
        layers.append(nn.Conv2d(ngf * 4, nz, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)
