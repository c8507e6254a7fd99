"""The streaming backend: the decoded splits as litdata chunks, read with litdata's StreamingDataset.

For clusters whose data lives in an object store or on a shared file system that is slow at random reads: each
split is written once (`litdata.optimize`, from the decoded cache) as chunks of about 64 MB under
`<stream>/<split>/`, and training reads whole chunks (downloading them to a local cache when `stream` is remote)
instead of faulting pages of a mapped file in at random. Installed by the `streaming` extra
(`pip install "gon-lightning[streaming]"`).

What litdata does differently from the mapped cache, and how it is met here:
- it reads the rank and world size when the dataset is constructed, so the datasets are built in the
  `*_dataloader` hooks, after the process group exists (built earlier, every rank would stream everything);
- under DDP it drops the last samples so every rank gets as many (it forces `drop_last`);
- its shuffle is seeded (`seed`, changed per epoch), not drawn from torch's generator, so one process does not
  follow `DataLoader(shuffle=True)`'s order as the mapped backend does;
- its `StreamingDataLoader` is stateful: Lightning saves it in every checkpoint and restores it before the
  epoch resumes, so a resume from a checkpoint written mid-epoch continues the epoch's order (tested, one
  process and DDP, with pytorch-lightning 2.6 and litdata 0.2.76; Lightning does not fetch ahead from a
  loader with a length, so the samples it counts as handed out are the ones trained on); the loader here
  ends that restore with the resumed epoch (`_loader_class`), which litdata alone does not under Lightning.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gon_lightning.errors import UserError

CHUNK_BYTES = "64MB"
META = "gon_lightning.json"
ROWS_PER_INPUT = 4096  # images per optimize() input: few inputs, each a run of rows


def litdata():
    try:
        import litdata
    except ImportError as error:
        raise UserError(
            'data.stream needs the litdata package: pip install "gon-lightning[streaming]" (or pip install litdata)'
        ) from error
    return litdata


def is_remote(stream: str) -> bool:
    return "://" in stream


def split_dir(stream: str, split: str) -> str:
    return f"{stream.rstrip('/')}/{split}"


def written(stream: str) -> dict[str, Any] | None:
    """What a local `stream` holds ({"dims", "fingerprint", "splits"}, written once every split is), else None."""
    meta = Path(stream) / META
    return None if is_remote(stream) or not meta.is_file() else json.loads(meta.read_text())


class _Rows:
    """optimize()'s function: the samples of rows [start, stop) of a cached split (opened in the worker)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, rows: tuple[int, int]) -> Iterator[dict[str, Any]]:
        images = np.load(self.path, mmap_mode="r")
        for index in range(*rows):
            yield {"index": index, "image": np.ascontiguousarray(images[index])}


def write_stream(cache_path: Path, splits: dict[str, int], stream: str, meta: dict[str, Any]) -> None:
    """Write every cached split (its .npy file under `cache_path`, `splits[name]` images) as litdata chunks to a
    local `stream`, then `meta` (what the cache holds) beside them."""
    optimize = litdata().optimize
    try:
        for name, count in splits.items():
            inputs = [(start, min(start + ROWS_PER_INPUT, count)) for start in range(0, count, ROWS_PER_INPUT)]
            optimize(
                fn=_Rows(cache_path / f"{name}.npy"),
                inputs=inputs,
                output_dir=split_dir(stream, name),
                chunk_bytes=CHUNK_BYTES,
                num_workers=1,
                keep_data_ordered=True,  # samples in row order: index i is row i
                mode="overwrite",
                verbose=False,
            )
        (Path(stream) / META).write_text(json.dumps({**meta, "splits": sorted(splits)}, indent=1))
    except BaseException:
        for name in splits:  # no half-written split left to take space (and to be written again anyway)
            shutil.rmtree(split_dir(stream, name), ignore_errors=True)
        raise


def stack_images(samples: list[dict[str, Any]]) -> Tensor:
    """A batch of samples -> (B, C, H, W) uint8, as the mapped backend serves."""
    return torch.from_numpy(np.stack([sample["image"] for sample in samples]))


@functools.cache
def _loader_class() -> type:
    class StreamingLoader(litdata().StreamingDataLoader):
        """litdata's StreamingDataLoader, whose `restore` lasts one epoch however that epoch ends.

        A loader restored from a checkpoint continues the stopped epoch and clears `restore` once that epoch's
        iterator is exhausted; Lightning ends an epoch of a loader with a length after its last batch without
        asking for one more, so the next epoch would be taken for the restored one again and serve nothing (an
        empty epoch after every mid-epoch resume: one epoch too few for max_epochs). Cleared at the first batch.
        """

        def __iter__(self) -> Iterator[Any]:
            for batch in super().__iter__():
                self.restore = False
                yield batch

    return StreamingLoader


def loader(stream: str, split: str, batch_size: int, train: bool, seed: int) -> Any:
    """A StreamingDataLoader of one split (build it once the process group exists)."""
    dataset = litdata().StreamingDataset(split_dir(stream, split), shuffle=train, drop_last=train, seed=seed)
    return _loader_class()(dataset, batch_size=batch_size, collate_fn=stack_images, drop_last=train)
