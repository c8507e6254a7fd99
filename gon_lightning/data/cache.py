"""The decoded cache: every split as a uint8 array file that each process memory-maps.

A dataset is decoded and resized once into `<cache>/<split>.npy` (N, C, H, W) uint8 with `<split>_labels.npy`
(N,) int64 beside it and `meta.json` saying what it holds. Training maps the arrays copy-on-write: the pages live
in the operating system's page cache, shared by every process on the node (DDP ranks, other jobs), so N ranks hold
one copy, and a dataset larger than memory is read from disk as batches ask for it. A batch is then one gather from
the mapped tensor, exactly as from a tensor in memory.

A cache is built in a staging folder and renamed into place, so a reader never sees half of one; `meta.json`
records the format, the image shape and the DataModule's fingerprint (for a folder of images: its file list), and a
cache that does not match is rebuilt.
"""

from __future__ import annotations

import errno
import io
import json
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

Split = tuple[Tensor, Tensor]  # images (N, C, H, W) uint8, labels (N,) int64
CACHE_FORMAT = 2
META = "meta.json"


class CacheWriter:
    """Fills a new cache folder split by split; `commit` puts it in place of `path`.

    Small datasets hand whole tensors to `add_split`. Large ones ask `open_split` for a writable mapped array of
    the size they expect, decode into it, and `close_split` with the number of rows they kept (the first ones),
    so nothing larger than a batch of images is ever held in memory.
    """

    def __init__(self, path: Path, dims: tuple[int, int, int]) -> None:
        self.path = path
        self.dims = tuple(dims)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
        self.counts: dict[str, int] = {}
        self._open: dict[str, tuple[np.memmap, np.ndarray]] = {}

    def open_split(self, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """A writable (count, C, H, W) uint8 array mapped onto the split's file, and its (count,) labels."""
        path = self.staging / f"{name}.npy"
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, *self.dims))
        _allocate(path)
        labels = np.zeros(count, dtype=np.int64)
        self._open[name] = (images, labels)
        return images, labels

    def close_split(self, name: str, kept: int | None = None) -> None:
        """Finish a split opened with `open_split`, keeping its first `kept` rows (all by default)."""
        images, labels = self._open.pop(name)
        count = len(images) if kept is None else kept
        images.flush()
        del images  # unmapped before the file is shrunk
        if count != len(labels):
            _shrink_npy(self.staging / f"{name}.npy", count)
        np.save(self.staging / f"{name}_labels.npy", labels[:count])
        self.counts[name] = count

    def add_split(self, name: str, images: Tensor, labels: Tensor) -> None:
        out, out_labels = self.open_split(name, len(images))
        out[:] = images.numpy()
        out_labels[:] = labels.numpy()
        self.close_split(name)

    def commit(self, fingerprint: dict[str, Any]) -> None:
        meta = {"format": CACHE_FORMAT, "dims": list(self.dims), "splits": self.counts, "fingerprint": fingerprint}
        (self.staging / META).write_text(json.dumps(meta, indent=1))
        # as readable as the folder that holds it: mkdtemp's 0700 would hide it from the other users of a node
        self.staging.chmod(self.path.parent.stat().st_mode & 0o777)
        for attempt in range(3):
            if self.path.exists():
                if _meta(self.path) == json.loads(json.dumps(meta)) and _intact(self.path, self.dims, self.counts):
                    return  # another process sharing this file system (a node of the job) built the same cache first
                # a stale cache: replaced whole
                old = self.path.with_name(f".{self.path.name}.old-{self.staging.name}")
                self.path.rename(old)
                shutil.rmtree(old, ignore_errors=True)  # a process still mapping its files keeps reading them
            try:
                self.staging.rename(self.path)
                return
            except OSError as error:
                # another builder renamed its cache into place between the look above and this rename: look again
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 2:
                    raise

    def discard(self) -> None:
        self._open.clear()
        shutil.rmtree(self.staging, ignore_errors=True)


def _allocate(path: Path) -> None:
    """Take a file's disk blocks now: a disk that cannot hold it fails here with ENOSPC, where writing through a
    mapping into the sparse file would kill the process with SIGBUS halfway. Where the call or the file system
    does not offer it (macOS, some network file systems), the file stays sparse."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None


def _intact(path: Path, dims: tuple[int, int, int], counts: dict[str, int]) -> bool:
    """Whether every split's files hold the shapes `counts` says (a truncated file does not)."""
    try:
        _map_splits(path, dims, counts)
        return True
    except (OSError, ValueError, TypeError):  # TypeError: numpy's "buffer is too small" for a truncated file
        return False


def _map_splits(path: Path, dims: tuple[int, int, int], counts: dict[str, int], random_access: bool = False) -> dict:
    """{split: (images, labels)} of a cache folder, the images mapped; a ValueError where a shape is not `counts`'."""
    splits = {}
    for name, count in counts.items():
        images = torch.from_numpy(map_npy(path / f"{name}.npy", random_access))
        labels = torch.from_numpy(np.load(path / f"{name}_labels.npy"))
        if images.shape != (count, *dims) or labels.shape != (count,):
            raise ValueError(f"{name} holds {tuple(images.shape)} images and {len(labels)} labels")
        splits[name] = (images, labels)
    return splits


@contextmanager
def cache_writer(path: Path, dims: tuple[int, int, int]) -> Iterator[CacheWriter]:
    """A `CacheWriter` whose staging folder is removed whatever happens (committed or not)."""
    writer = CacheWriter(path, dims)
    try:
        yield writer
    finally:
        writer.discard()


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of the .npy file `f` (read from its start)."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    return shape, fortran, dtype, f.tell()


def _shrink_npy(path: Path, count: int) -> None:
    """Keep the first `count` rows of an .npy file in place: rewrite its header, truncate the data."""
    with open(path, "r+b") as f:
        shape, fortran, dtype, offset = _npy_header(f)
        header = io.BytesIO()
        new_shape = (count, *shape[1:])
        np.lib.format.write_array_header_1_0(header, {"descr": dtype.str, "fortran_order": fortran, "shape": new_shape})
        if len(header.getvalue()) != offset:  # never seen (numpy pads headers to 64 bytes), but never guess
            data = np.load(path, mmap_mode="r")[:count].copy()
            f.close()
            np.save(path, data)
            return
        f.seek(0)
        f.write(header.getvalue())
        f.truncate(offset + count * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def read_cache(path: Path, dims: tuple[int, int, int], fingerprint: dict[str, Any]) -> dict[str, Split] | None:
    """The cache's splits, memory-mapped, or None (with a note why) when there is none that matches."""
    meta_path = path / META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT or tuple(meta.get("dims", ())) != tuple(dims):
            rank_zero_info(f"Cache {path} holds another format or image size; decoding again")
            return None
        if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            rank_zero_info(f"The files behind {path} changed since it was built; decoding again")
            return None
        image_bytes = sum(count * int(np.prod(dims)) for count in meta["splits"].values())
        memory = available_memory()
        random_access = image_bytes > memory
        if random_access:
            rank_zero_info(
                f"The decoded images ({image_bytes / 1e9:.1f} GB) exceed the memory available "
                f"({memory / 1e9:.1f} GB): every epoch reads them from disk at random"
            )
        return _map_splits(path, dims, meta["splits"], random_access)
    except Exception as error:
        rank_zero_warn(f"ignoring unreadable cache {path} ({error}); decoding again")
        return None


def map_npy(path: Path, random_access: bool = False) -> np.ndarray:
    """An .npy file mapped copy-on-write (nothing writes to it: its pages are the page cache's, shared by every
    process that maps the file).

    `random_access` tells the kernel (madvise MADV_RANDOM) that a page fault should read that page alone, not
    the read-around window (128 KiB by default) that pays off for sequential reads. Measured here (docs/
    data_at_scale.md): with the page cache too small for the file, a random batch of 32x32 colour images came
    55x faster with it, as read-around evicted pages before they were used; while the file fits, read-around
    fills the page cache in fewer, larger reads over the first epoch, so it is kept.
    """
    with open(path, "rb") as f:
        shape, fortran, dtype, offset = _npy_header(f)
        if fortran:
            raise ValueError(f"{path} is in Fortran order")
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    if random_access:
        mapping.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype, buffer=mapping, offset=offset)


def available_memory() -> int:
    """Bytes of data this process could keep in memory: the system's available memory (which counts the page
    cache the kernel can reclaim), or less under a cgroup memory limit (v1 or v2): the limit less what the group
    holds besides its page cache."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return available
    for line in groups:
        _, controllers, group = line.split(":", 2)
        if controllers not in ("memory", ""):
            continue
        v1 = controllers == "memory"
        folder = Path("/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup") / group.lstrip("/")
        try:
            limit = (folder / ("memory.limit_in_bytes" if v1 else "memory.max")).read_text().strip()
            usage = int((folder / ("memory.usage_in_bytes" if v1 else "memory.current")).read_text())
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            cache = int(stat.get("cache" if v1 else "file", 0))
            available = min(available, int(limit) - usage + cache)
    return available
