"""One LightningModule per file; the GON family shares the origin step in `origin.py`."""

from gon_lightning.models.base import ImageModel
from gon_lightning.models.gon import GON
from gon_lightning.models.origin import OriginModel

__all__ = ["GON", "ImageModel", "OriginModel"]
