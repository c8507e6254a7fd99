"""The DCGAN-style decoder of the GON paper and its mirrored encoder, at 32, 64, 128 and 256 px.

The paper's 32x32 decoder projects z to 4x4 and doubles the side with each stride-2 layer; a larger image takes
one more stride-2 layer per doubling (DCGAN's rule: log2(size / 4) of them), and the widths keep doubling
towards the latent. At 32 px the networks are exactly the paper's.
"""

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


IMAGE_SIZES = (32, 64, 128, 256)


def check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        sizes = ", ".join(map(str, IMAGE_SIZES))
        raise UserError(
            f"the convolutional models are built for {sizes} px square images, got image_size={image_size}; "
            f"set data.image_size to one of {sizes}"
        )


def hidden_widths(width: int, image_size: int) -> list[int]:
    """Channels of the hidden layers from the latent side to the image side: [..., 4 w, 2 w, w], one per stride-2
    layer, i.e. log2(image_size / 4) of them (3 at 32 px). The decoder reads it forwards, encoders backwards."""
    check_image_size(image_size)
    return [width * 2**k for k in reversed(range(image_size.bit_length() - 3))]


class ConvDecoder(nn.Module):
    """z (B, nz) -> image (B, C, S, S) in (0, 1): ConvTranspose2d 4x4 + norm + activation, sigmoid out.

    Widths nz -> 4 ngf -> 2 ngf -> ngf -> C at 32 px, nz -> 8 ngf -> 4 ngf -> 2 ngf -> ngf -> C at 64 px, and so on.
    """

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
        widths = [nz, *hidden_widths(ngf, image_size)]
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
    """The decoder mirrored: image (B, C, S, S) -> (B, nz)."""

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
        widths = [channels, *reversed(hidden_widths(ngf, image_size))]
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), make_norm(norm, c_out), make_activation(activation)]
        layers.append(nn.Conv2d(widths[-1], nz, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)
