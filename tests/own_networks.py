"""Networks of "a researcher's own", defined outside the package: the tests name them by class_path."""

from __future__ import annotations

from torch import Tensor, nn


class UpDecoder(nn.Module):
    """Linear to a 4x4 map of `width` channels, then nearest-neighbour upsampling and 3x3 convolutions (no
    transposed convolutions, no BatchNorm), any square size that is 4 times a power of 2; sigmoid out."""

    def __init__(self, nz: int, image_shape: tuple[int, int, int], width: int = 8) -> None:
        super().__init__()
        channels, size, _ = image_shape
        self.width = width
        self.project = nn.Linear(nz, width * 16)
        layers: list[nn.Module] = []
        for _ in range((size // 4).bit_length() - 1):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ELU()]
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(len(z), self.width, 4, 4))


class PoolEncoder(nn.Module):
    """Two strided convolutions, global average pooling, a linear map to nz."""

    def __init__(self, nz: int, image_shape: tuple[int, int, int], width: int = 8) -> None:
        super().__init__()
        channels = image_shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.ELU(), nn.Conv2d(width, width, 3, 2, 1), nn.ELU()
        )
        self.head = nn.Linear(width, nz)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.net(x).mean((2, 3)))


class WrongSizeDecoder(UpDecoder):
    """Always 8x8 images, whatever the model asks for."""

    def __init__(self, nz: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__(nz, (image_shape[0], 8, 8))


class UnboundedDecoder(UpDecoder):
    """Images without the sigmoid: outside [0, 1]."""

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z) + 1  # in (1, 2) whatever the weights (a logit could fall inside [0, 1])
