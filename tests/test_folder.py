"""ImageFolderDataModule and the decoding module, on generated image trees (every format and mode PIL writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import FORMATS, broken_files, exif_rotated_jpeg, jpeg_bytes, non_images, photo_folder, write_image
from PIL import Image

from gon_lightning.cli import main
from gon_lightning.data import ImageFolderDataModule
from gon_lightning.data import decode as decoding
from gon_lightning.data.decode import Geometry, decode_file, decode_into, list_images
from gon_lightning.errors import UserError

CONFIGS = Path(__file__).parents[1] / "configs"
LOSSY = (".jpg", ".jpeg", ".webp", ".tif")  # JPEG's colour conversion and the CMYK round trip move a few levels


def folder_module(root: Path, tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"batch_size": 4, "image_size": 16, "cache_dir": tmp_path / "cache", **kwargs}
    return ImageFolderDataModule(root, **kwargs)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("channels", [3, 1])
def test_every_format_and_mode_decodes_to_its_colour(tmp_path, name, channels):
    colour = write_image(tmp_path / name, name)
    image = decode_file(tmp_path / name, Geometry(8, channels))
    assert image.shape == (channels, 8, 8) and image.dtype == np.uint8
    expected = np.array(colour, np.float64)
    if channels == 1:  # PIL's ITU-R 601-2 luma
        expected = np.array([expected @ [0.299, 0.587, 0.114]])
    tolerance = 6 if name.lower().endswith(LOSSY) else 1.5
    assert np.abs(image.reshape(channels, -1).mean(1) - expected).max() <= tolerance, image[:, 0, 0]


@pytest.mark.parametrize("scale", [1, 10])  # 10: JPEG draft mode shrinks it while decoding
@pytest.mark.parametrize("fit", ["stretch", "center"])
def test_exif_orientation_is_applied(tmp_path, scale, fit):
    exif_rotated_jpeg(tmp_path / "rotated.jpg", scale)  # stored 40x20 black|white, shown 20x40 black over white
    image = decode_file(tmp_path / "rotated.jpg", Geometry(16, 1, fit=fit))[0].astype(int)
    if fit == "stretch":
        assert image[:6].mean() < 30 and image[-6:].mean() > 225
    else:  # the centred square straddles the edge: black over white, left and right alike
        assert image[:6].mean() < 30 and image[-6:].mean() > 225 and image[:, 0].tolist() == image[:, -1].tolist()


@pytest.mark.parametrize(("fit", "expected"), [("center", 255), ("pad", 0), ("stretch", 255)])
def test_fit_modes_of_a_wide_image(tmp_path, fit, expected):
    pixels = np.full((20, 60, 3), 255, np.uint8)  # white, 3:1
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = decode_file(tmp_path / "wide.png", Geometry(12, 3, fit=fit))
    assert image[:, 0, 6].tolist() == [expected] * 3  # the top row: white, or black padding
    assert image[:, 6, 6].tolist() == [255] * 3


def test_listing_rules(tmp_path):
    for name in FORMATS:
        write_image(tmp_path / "a" / "b" / name, name)
    non_images(tmp_path)
    non_images(tmp_path / "a")
    found = {Path(p).as_posix() for p in list_images(tmp_path)}
    assert found == {f"a/b/{name}" for name in FORMATS}


def test_labels_split_and_shapes(image_folder_root, tmp_path):
    data = folder_module(image_folder_root, tmp_path)
    data.setup("fit")
    assert data.splits["train"].shape == (72, 3, 16, 16) and data.splits["test"].shape == (8, 3, 16, 16)
    files, labels = data.split_files()["train"]
    for path, label in zip(files, labels, strict=True):  # torchvision's ImageFolder: the first-level folder
        assert label == ["cats", "dogs"].index(Path(path).relative_to(image_folder_root).parts[0])
    assert torch.equal(data.labels["train"], torch.tensor(labels))
    again = folder_module(image_folder_root, tmp_path, image_size=8).split_files()
    assert again == data.split_files()  # the seeded split never moves


def test_images_directly_in_the_folder_are_unlabelled(tmp_path):
    for i in range(6):
        (tmp_path / "flat" / f"{i}.jpg").parent.mkdir(exist_ok=True)
        (tmp_path / "flat" / f"{i}.jpg").write_bytes(jpeg_bytes())
    data = folder_module(tmp_path / "flat", tmp_path, batch_size=2, test_fraction=0.5)
    assert {label for _, labels in data.split_files().values() for label in labels} == {-1}


def test_train_and_test_subfolders_are_used_as_given(tmp_path):
    root = tmp_path / "given"
    photo_folder(root / "train", 8)
    photo_folder(root / "test", 4, classes=("dogs", "zebras"))
    data = folder_module(root, tmp_path)
    files = data.split_files()
    assert [len(files[name][0]) for name in ("train", "test")] == [8, 4]
    assert all(Path(p).is_relative_to(root / "test") for p in files["test"][0])
    assert set(files["test"][1]) == {1, 2}  # classes shared by both splits: cats 0, dogs 1, zebras 2
    with pytest.raises(UserError, match="test_fraction"):
        folder_module(root, tmp_path, test_fraction=0.2).split_files()
    non_images(root)  # hidden files and folders beside train/ and test/ are no strays
    assert len(folder_module(root, tmp_path).split_files()["train"][0]) == 8
    (root / "stray.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(UserError, match=r"1 images outside them .*stray\.jpg"):
        folder_module(root, tmp_path).split_files()


def test_broken_files_stop_the_run_naming_them(image_folder_root, tmp_path):
    broken = broken_files(image_folder_root / "cats")
    data = folder_module(image_folder_root, tmp_path)
    with pytest.raises(UserError) as error:
        data.prepare_data()
    message = str(error.value)
    assert "\n" not in message and "3 of 83 image files" in message and "skip_broken" in message
    assert all(str(path) in message for path in broken)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing committed


def test_skip_broken_keeps_exactly_the_images_that_decode(image_folder_root, tmp_path, monkeypatch):
    broken = broken_files(image_folder_root / "cats")
    data = folder_module(image_folder_root, tmp_path, skip_broken=True, test_fraction=0.5)
    warnings = []
    monkeypatch.setattr(decoding, "rank_zero_warn", warnings.append)
    data.setup("fit")
    assert len(warnings) == 1 and "skipped 3 of 83" in warnings[0]
    kept = 0
    for name, (files, _) in data.split_files().items():
        good = [p for p in files if Path(p) not in broken]
        expected = np.stack([decode_file(p, data.geometry) for p in good])
        assert np.array_equal(data.splits["val" if name == "test" else name].numpy(), expected)
        kept += len(good)
    assert kept == 80
    listed = (data.cache_path / "skipped.txt").read_text()
    assert all(str(p) in listed for p in broken)
    folder_module(image_folder_root, tmp_path, skip_broken=True, test_fraction=0.5).setup("fit")
    assert len(warnings) == 2 and "skipped 3 " in warnings[1]  # said again whenever the cache is used


def test_parallel_decode_writes_the_same_rows(tmp_path, monkeypatch):
    paths = [tmp_path / f"{i:02d}.jpg" for i in range(24)]
    rng = np.random.default_rng(0)
    for path in paths:
        path.write_bytes(jpeg_bytes(tuple(int(v) for v in rng.integers(0, 256, 3)), (50, 70)))
    paths[5].write_bytes(b"not a jpeg")
    geometry = Geometry(8)
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(decoding, "PARALLEL_FROM", 0)
        target = np.lib.format.open_memmap(tmp_path / f"{workers}.npy", "w+", np.uint8, (24, 3, 8, 8))
        failed = decode_into(target, tmp_path / f"{workers}.npy", paths, geometry, workers=workers)
        results.append((np.load(tmp_path / f"{workers}.npy"), failed))
    assert np.array_equal(results[0][0], results[1][0]) and results[0][0][0].any()
    assert list(results[0][1]) == list(results[1][1]) == [5]


def test_cache_is_reused_and_rebuilt_when_files_or_options_change(image_folder_root, tmp_path):
    def build(**kwargs) -> float:
        data = folder_module(image_folder_root, tmp_path, **kwargs)
        data.prepare_data()
        return (data.cache_path / "meta.json").stat().st_mtime_ns

    first = build()
    assert build() == first  # nothing changed: reused
    touched = sorted(image_folder_root.glob("cats/*.jpg"))[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    second = build()
    assert second != first
    assert build(channels=1) != second
    assert build(channels=1, fit="pad") != build(channels=1)
    (image_folder_root / "cats" / "new.png").write_bytes(jpeg_bytes())  # a JPEG named .png decodes too
    meta = json.loads((tmp_path / "cache" / "gon_lightning_16px" / "meta.json").read_text())
    data = folder_module(image_folder_root, tmp_path)
    data.setup("fit")
    assert json.loads((data.cache_path / "meta.json").read_text()) != meta
    assert sum(len(images) for name, images in data.splits.items() if name != "val") == 81


def test_default_cache_is_outside_the_folder_and_a_cache_inside_is_not_read(image_folder_root, tmp_path):
    data = ImageFolderDataModule(image_folder_root, batch_size=4, image_size=8)
    assert data.cache_path.is_relative_to(tmp_path / "xdg-cache" / "gon_lightning" / "folders")
    inside = folder_module(image_folder_root, tmp_path, cache_dir=image_folder_root / "cache")
    inside.setup("fit")
    again = folder_module(image_folder_root, tmp_path, cache_dir=image_folder_root / "cache")
    assert sum(len(f) for f, _ in again.split_files().values()) == 80


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 2}, "channels must be 1"),
        ({"fit": "zoom"}, "fit must be center or pad or stretch"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ],
)
def test_bad_options(image_folder_root, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        folder_module(image_folder_root, tmp_path, **kwargs)


def test_empty_missing_and_too_small_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    non_images(tmp_path / "empty")
    with pytest.raises(UserError, match=f"no image files under {tmp_path / 'empty'}"):
        folder_module(tmp_path / "empty", tmp_path).prepare_data()
    with pytest.raises(UserError, match="is not a folder"):
        folder_module(tmp_path / "missing", tmp_path)
    photo_folder(tmp_path / "few", 4)
    with pytest.raises(UserError, match=f"{tmp_path / 'few'} has 3 training images, fewer than one batch"):
        folder_module(tmp_path / "few", tmp_path).prepare_data()


def test_a_folder_trains_through_the_cli(image_folder_root, tmp_path):
    """The README's way, at 32 px with the conv GON (its size until the conv models grow) and 64 px (implicit GON)."""
    common = [f"--data.root={image_folder_root}", "--data.batch_size=8", "--trainer.logger=false"]
    common += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    common += ["--trainer.num_sanity_val_steps=0", f"--runs_root={tmp_path}"]
    gon = ["--data.image_size=32", "--model.init_args.nz=8", "--model.init_args.ngf=4"]
    cli = main(["fit", f"--config={CONFIGS / 'gon_folder.yaml'}", *common, *gon])
    assert cli.model.image_shape == (3, 32, 32) and cli.trainer.global_step == 2
    implicit = ["--model=ImplicitGON", "--model.init_args.widths=[16]", "--data=ImageFolderDataModule"]
    cli = main(["fit", *implicit, *common, "--data.image_size=64"])
    assert cli.model.image_shape == (3, 64, 64) and cli.trainer.global_step == 2


@pytest.mark.slow
def test_decode_benchmark_runs(tmp_path):
    """benchmarks/decode.py end to end, small: every contender reports, the pool included (a split of 512+ files)."""
    command = [sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "decode.py"), "--images", "700"]
    done = subprocess.run([*command, "--single", "20"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("PIL, full decode", "PIL, draft mode", "torchvision decode_jpeg", "CelebADataModule", "in workers"):
        assert label in done.stdout


def test_a_val_subfolder_is_the_validation_split(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "given"
    for split, count in (("train", 8), ("test", 3), ("val", 2)):
        photo_folder(root / split, count)
    data = folder_module(root, tmp_path)
    data.setup("fit")
    assert [len(data.splits[name]) for name in ("train", "val", "test")] == [8, 2, 3]


def test_the_cluster_options_reach_the_base(tmp_path):
    """cache_per_node and stream are every DataModule's options, the folder's and CelebA's too (--data.cache_per_node
    false builds the cache once per job; --data.stream serves it with litdata)."""
    from gon_lightning.data import CelebADataModule

    folder = photo_folder(tmp_path / "photos", 4)
    dm = ImageFolderDataModule(root=folder, cache_per_node=False, stream=str(tmp_path / "stream"))
    assert dm.prepare_data_per_node is False and dm.stream == str(tmp_path / "stream")
    celeba = CelebADataModule(root=tmp_path, cache_per_node=False, stream=str(tmp_path / "stream"))
    assert celeba.prepare_data_per_node is False and celeba.stream == str(tmp_path / "stream")
