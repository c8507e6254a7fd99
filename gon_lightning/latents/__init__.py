"""A checkpoint's latents as data: the on-disk format of an encoded folder (`store.py`) and the streaming encoder
that writes one (`encoding.py`); `gon_lightning.data.LatentDataModule` reads them back for training."""

from gon_lightning.latents.store import CARD, FORMAT_VERSION, read_card, read_split

__all__ = ["CARD", "FORMAT_VERSION", "read_card", "read_split"]
