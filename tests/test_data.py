"""The DataModules on fake files in each dataset's real format, including every bad input."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
from conftest import N_TEST, N_TRAIN, coil20_zip
from torchvision import datasets

from gon_lightning.data import (
    CIFAR10DataModule,
    COIL20DataModule,
    FashionMNISTDataModule,
    MNIST5kDataModule,
    MNISTDataModule,
)
from gon_lightning.data import coil20 as coil20_module
from gon_lightning.data.base import InMemoryImages
from gon_lightning.errors import UserError


def loaded(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def first_batch(dm, split: str = "train") -> torch.Tensor:
    loader = getattr(dm, f"{split}_dataloader")()
    return dm.on_after_batch_transfer(next(iter(loader)), 0)


@pytest.mark.parametrize(
    ("module", "root_fixture"), [(MNISTDataModule, "mnist_root"), (FashionMNISTDataModule, "fashion_root")]
)
def test_mnist_layout_decodes_resizes_and_caches(module, root_fixture, request):
    root = request.getfixturevalue(root_fixture)
    dm = loaded(module(root=root, batch_size=32, download=False))
    assert dm.dims == (1, 32, 32)
    assert dm.splits["train"].shape == (N_TRAIN, 1, 32, 32) and dm.splits["train"].dtype == torch.uint8
    assert dm.splits["test"].shape == (N_TEST, 1, 32, 32)
    assert (dm.cache_path / "meta.json").is_file() and (dm.cache_path / "train.npy").is_file()
    x = first_batch(dm)
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    # the cache serves a second DataModule even once the raw files are gone
    shutil.rmtree(dm.data_dir)
    again = loaded(module(root=root, batch_size=32, download=False))
    assert torch.equal(again.splits["train"], dm.splits["train"])


def test_native_size_keeps_pixels(mnist_root, digits):
    dm = loaded(MNISTDataModule(root=mnist_root, image_size=28, download=False))
    assert torch.equal(dm.splits["train"][:, 0], torch.from_numpy(digits[0][:N_TRAIN]))


def test_val_fraction_holds_out_part_of_train(mnist_root):
    dm = loaded(MNISTDataModule(root=mnist_root, val_fraction=0.25, download=False))
    assert len(dm.splits["val"]) == N_TRAIN // 4 and len(dm.splits["train"]) == N_TRAIN - N_TRAIN // 4
    default = loaded(MNISTDataModule(root=mnist_root, download=False))
    assert default.splits["val"] is default.splits["test"]  # the references' per-epoch test curve


def test_cifar_batches(cifar_root):
    dm = loaded(CIFAR10DataModule(root=cifar_root, batch_size=16, download=False))
    assert dm.dims == (3, 32, 32)
    assert dm.splits["train"].shape == (80, 3, 32, 32) and dm.splits["test"].shape == (16, 3, 32, 32)
    assert dm.labels["train"].tolist()[:16] == [1] * 16


def test_cifar_corrupt_file_is_named(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*(unreadable|corrupt)"):
        loaded(CIFAR10DataModule(root=cifar_root, download=False))


def test_coil20_from_archive_split_and_size(coil20_root):
    dm = loaded(COIL20DataModule(root=coil20_root, download=False))
    assert dm.splits["train"].shape == (1152, 1, 32, 32) and dm.splits["test"].shape == (288, 1, 32, 32)
    assert (coil20_root / "coil-20" / "coil-20-proc" / "obj1__0.png").is_file()


def test_coil20_download_falls_back_to_second_url(tmp_path, coil20_archive, monkeypatch):
    monkeypatch.setattr(coil20_module, "URLS", (f"file://{tmp_path}/absent.zip", coil20_archive.as_uri()))
    dm = loaded(COIL20DataModule(root=tmp_path / "root"))
    assert len(dm.splits["train"]) == 1152
    assert not list((tmp_path / "root" / "coil-20").glob(".*part"))


def test_coil20_offline_error_names_directory_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(coil20_module, "URLS", (f"file://{tmp_path}/a.zip", f"file://{tmp_path}/b.zip"))
    root = tmp_path / "root"
    with pytest.raises(UserError, match=r"COIL-20 is not in .*coil-20.*could not download"):
        loaded(COIL20DataModule(root=root))
    assert not any(p.is_file() for p in root.rglob("*"))


def test_coil20_refuses_archive_escaping_target(tmp_path):
    root = tmp_path / "root"
    (root / "coil-20").mkdir(parents=True)
    coil20_zip(root / "coil-20" / "coil-20-proc.zip", {"../evil.png": b"x"})
    with pytest.raises(UserError, match=r"refusing to extract .*'\.\./evil\.png'"):
        loaded(COIL20DataModule(root=root, download=False))
    assert not (root / "evil.png").exists() and not (root / "coil-20" / "coil-20-proc").exists()


def test_coil20_incomplete_archive(tmp_path):
    root = tmp_path / "root"
    (root / "coil-20").mkdir(parents=True)
    with zipfile.ZipFile(root / "coil-20" / "coil-20-proc.zip", "w") as zf:
        zf.writestr("coil-20-proc/obj1__0.png", b"")
    with pytest.raises(UserError, match=r"incomplete: expected 1440 .* found 1"):
        loaded(COIL20DataModule(root=root, download=False))


def test_coil20_corrupt_zip(tmp_path):
    root = tmp_path / "root"
    (root / "coil-20").mkdir(parents=True)
    (root / "coil-20" / "coil-20-proc.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"coil-20-proc\.zip is not a valid zip"):
        loaded(COIL20DataModule(root=root, download=False))


def test_mnist_missing_offline_names_files_and_leaves_nothing(tmp_path, monkeypatch):
    # an unreachable mirror stands in for no network: the real download code runs and fails
    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"file://{tmp_path}/nowhere/"])
    root = tmp_path / "root"
    with pytest.raises(UserError, match=r"MNIST is not in .*MNIST/raw.*download failed.*train-images-idx3-ubyte"):
        loaded(MNISTDataModule(root=root))
    assert not any(p.is_file() for p in root.rglob("*")) if root.exists() else True


def test_mnist_download_path_with_local_mirror(tmp_path, mnist_root, monkeypatch, serve_directory):
    import gzip

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for raw in (mnist_root / "MNIST" / "raw").iterdir():
        (mirror / f"{raw.name}.gz").write_bytes(gzip.compress(raw.read_bytes()))
    monkeypatch.setattr(datasets.MNIST, "mirrors", [serve_directory(mirror)])
    monkeypatch.setattr(datasets.MNIST, "resources", [(name, None) for name, _ in datasets.MNIST.resources])
    dm = loaded(MNISTDataModule(root=tmp_path / "root"))
    assert len(dm.splits["train"]) == N_TRAIN


def test_download_false_and_missing(tmp_path):
    with pytest.raises(UserError, match=r"not in .*data.download is false"):
        loaded(MNISTDataModule(root=tmp_path, download=False))


def test_truncated_mnist_is_called_corrupt(mnist_root):
    path = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"MNIST files in .* are unreadable or corrupt"):
        loaded(MNISTDataModule(root=mnist_root, download=False))


@pytest.mark.parametrize(
    ("damaged", "kept"), [("train.npy", 100), ("train.npy", 1000), ("train_labels.npy", 100), ("meta.json", 100)]
)
def test_corrupt_cache_is_rebuilt(mnist_root, damaged, kept):
    dm = loaded(MNISTDataModule(root=mnist_root, download=False))
    expected = dm.splits["train"].clone()
    path = dm.cache_path / damaged
    path.write_bytes(path.read_bytes()[:kept])  # truncated in its header (100 bytes) or in its data
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = loaded(MNISTDataModule(root=mnist_root, download=False))
    assert torch.equal(again.splits["train"], expected)


def test_cache_is_mapped_not_copied(mnist_root):
    """Every process maps the same file: the split tensors are views of the cache files, not private copies."""
    dm = loaded(MNISTDataModule(root=mnist_root, download=False))
    cached = np.load(dm.cache_path / "train.npy", mmap_mode="r")
    assert torch.equal(dm.splits["train"], torch.from_numpy(np.array(cached)))
    assert not dm.splits["train"].untyped_storage().resizable()  # a mapping, not an allocation


def test_cache_writer_keeps_only_the_rows_it_was_told(tmp_path):
    """A split opened for more images than decode (skipped files) is shrunk to the rows kept."""
    from gon_lightning.data.cache import cache_writer, read_cache

    path = tmp_path / "cache"
    with cache_writer(path, (1, 2, 2)) as writer:
        images, labels = writer.open_split("train", 5)
        images[:3] = np.arange(12, dtype=np.uint8).reshape(3, 1, 2, 2)
        labels[:3] = [7, 8, 9]
        writer.close_split("train", kept=3)
        writer.commit({"files": 3})
    splits = read_cache(path, (1, 2, 2), {"files": 3})
    assert splits["train"][0].flatten().tolist() == list(range(12)) and splits["train"][1].tolist() == [7, 8, 9]
    assert read_cache(path, (1, 2, 2), {"files": 4}) is None  # another fingerprint: stale
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_embedded_mnist5k(tmp_path):
    dm = loaded(MNIST5kDataModule(root=tmp_path))
    assert dm.splits["train"].shape == (4000, 1, 32, 32) and dm.splits["test"].shape == (1000, 1, 32, 32)
    assert sorted(dm.labels["test"].unique().tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction"), ({"image_size": 0}, "image_size")],
)
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        MNISTDataModule(root=tmp_path, **kwargs)


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        MNISTDataModule(root=tmp_path / "file")


def test_batches_are_one_gather_of_the_sampled_indices():
    images = torch.arange(10 * 4, dtype=torch.uint8).reshape(10, 1, 2, 2)
    assert torch.equal(InMemoryImages(images).__getitems__([3, 0, 7]), images[[3, 0, 7]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (images kept on the GPU)")
def test_gpu_resident_batches_do_not_synchronise_the_host():
    images = torch.arange(10 * 4, dtype=torch.uint8).reshape(10, 1, 2, 2)
    dataset = InMemoryImages(images.cuda())
    torch.cuda.set_sync_debug_mode("error")  # a stream synchronisation raises
    try:
        batch = dataset.__getitems__([3, 0, 7])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(batch.cpu(), images[[3, 0, 7]])


def test_cache_larger_than_memory_is_mapped_for_random_reads(mnist_root, monkeypatch, caplog):
    """Past the memory available the mapping is advised for random access (no read-around); same images."""
    from gon_lightning.data import cache

    dm = loaded(MNISTDataModule(root=mnist_root, download=False))
    monkeypatch.setattr(cache, "available_memory", lambda: 1000)
    with caplog.at_level("INFO"):
        again = loaded(MNISTDataModule(root=mnist_root, download=False))
    assert "exceed the memory available" in caplog.text and "at random" in caplog.text
    assert torch.equal(again.splits["train"], dm.splits["train"])
    monkeypatch.undo()
    assert 0 < cache.available_memory() < 2**50  # the system's figure, or a cgroup's limit


def test_a_cache_built_twice_at_once_keeps_the_first(tmp_path):
    """Two nodes sharing a file system each build the cache (one process per node): the second to finish keeps
    the first one's folder instead of swapping it away under the processes already reading it."""
    from gon_lightning.data.cache import cache_writer, read_cache

    path = tmp_path / "cache"
    images, labels = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2), torch.tensor([0, 1])
    with cache_writer(path, (1, 2, 2)) as first, cache_writer(path, (1, 2, 2)) as second:
        first.add_split("train", images, labels)
        second.add_split("train", images, labels)
        first.commit({"n": 2})
        reading = read_cache(path, (1, 2, 2), {"n": 2})
        built_first = (path / "train.npy").stat().st_ino
        second.commit({"n": 2})
    assert (path / "train.npy").stat().st_ino == built_first
    assert torch.equal(reading["train"][0], images) and read_cache(path, (1, 2, 2), {"n": 2}) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # the second's staging folder is gone


def test_a_cache_committed_by_another_builder_between_look_and_rename_is_kept(tmp_path, monkeypatch):
    """The race behind two nodes building at once: the second looks, finds no cache, and the first renames its own
    into place before the second's rename, which then fails on a non-empty folder: it looks again and keeps it."""
    from pathlib import Path

    from gon_lightning.data.cache import cache_writer, read_cache

    path = tmp_path / "cache"
    images, labels = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2), torch.tensor([0, 1])
    with cache_writer(path, (1, 2, 2)) as first, cache_writer(path, (1, 2, 2)) as second:
        first.add_split("train", images, labels)
        second.add_split("train", images, labels)
        rename = Path.rename

        def first_wins(self, target):  # the first builder commits right before the second's rename
            if self == second.staging and not path.exists():
                first.commit({"n": 2})
            return rename(self, target)

        monkeypatch.setattr(Path, "rename", first_wins)
        second.commit({"n": 2})
        built_first = (path / "train.npy").stat().st_ino
    assert read_cache(path, (1, 2, 2), {"n": 2}) is not None
    assert (path / "train.npy").stat().st_ino == built_first
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
