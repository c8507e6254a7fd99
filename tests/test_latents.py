"""Latents as data: the encoded folder (store), the streaming encoder, LatentDataModule and the probes, on a tiny
GON trained a few steps on the fake MNIST."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gon_lightning.cli import main
from gon_lightning.data import LatentDataModule
from gon_lightning.errors import UserError
from gon_lightning.latents import read_card, read_split, store
from gon_lightning.latents.encoding import encode, encode_checkpoint, load_run
from gon_lightning.latents.probes import KNN_K, probe_accuracies
from tests.cli_args import base_args, only_run


@pytest.fixture(scope="session")
def trained_run(_mnist_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GON (nz 8, ngf 4) trained 4 steps on the fake MNIST (256 train, 64 test images, batch 16): its run folder."""
    root = tmp_path_factory.mktemp("latents")
    data = Path(shutil.copytree(_mnist_files, root / "data"))
    runs = root / "runs"
    main([*base_args(data, runs), "--trainer.limit_train_batches=4"])
    return only_run(runs)


@pytest.fixture
def ckpt(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run (each test writes its own latents/ cache into it)."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    return run / "checkpoints" / "last.ckpt"


def test_encoded_folder_holds_every_split_with_labels_sse_and_card(ckpt: Path, tmp_path: Path):
    card = encode_checkpoint(ckpt, tmp_path / "z", batch_size=24, shard_batches=2)
    assert card == read_card(tmp_path / "z")
    assert card["splits"] == {"train": 256, "test": 64} and card["labels"] == {"train": True, "test": True}
    assert card["model"]["nz"] == 8 and card["model"]["inner_reduction"] == "mean"
    assert card["model"]["norm_eval"] == "batch" and card["encoding"]["batch_size"] == 24
    assert len(card["checkpoint"]["sha256"]) == 64 and card["dataset"]["class_path"].endswith("MNISTDataModule")
    assert sorted(p.name for p in (tmp_path / "z" / "data").iterdir()) == [
        *(f"test-0000{i}.parquet" for i in range(2)),
        *(f"train-0000{i}.parquet" for i in range(6)),
    ]
    model, datamodule = load_run(ckpt)
    datamodule.setup("fit")
    test = read_split(tmp_path / "z", "test")
    assert test["latents"].dtype == torch.float32 and test["latents"].shape == (64, 8)
    assert torch.equal(test["labels"], datamodule.labels["test"].long())
    # the last batch (rows 48..63) was completed with the split's first 8 images; its latents are the batch's own
    images = datamodule.splits["test"].float() / 255
    model.eval()
    with torch.no_grad(), model.evaluation_protocol():
        z = model.encode_images(torch.cat([images[48:], images[:8]]))
        sse = (model.decode_latents(z) - torch.cat([images[48:], images[:8]])).square().flatten(1).sum(1)
        first = model.encode_images(images[:24])
    assert torch.equal(test["latents"][48:], z[:16]) and torch.equal(test["sse"][48:], sse[:16])
    assert torch.equal(test["latents"][:24], first)


def test_the_same_latents_bit_for_bit_whatever_the_shards(ckpt: Path, tmp_path: Path):
    encode_checkpoint(ckpt, tmp_path / "a", shard_batches=1)
    encode_checkpoint(ckpt, tmp_path / "b", shard_batches=64)
    for split in ("train", "test"):
        a, b = read_split(tmp_path / "a", split), read_split(tmp_path / "b", split)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_shards_two_processes_write_are_the_folder_one_writes(ckpt: Path, tmp_path: Path):
    """Rank 1 encodes its shards into the folder rank 0 prepared (the barrier), then rank 0 commits the folder."""
    model, datamodule = load_run(ckpt)
    options = {"batch_size": 16, "shard_batches": 3, "probes": False}

    def barrier(calls: list[int] = []) -> None:  # noqa: B006 (the rank-0 process's barrier count)
        calls.append(1)
        if len(calls) == 1:  # staging ready: the other process encodes its shards
            encode(model, datamodule, tmp_path / "two", rank=1, world_size=2, barrier=lambda: None, **options)

    encode(model, datamodule, tmp_path / "two", rank=0, world_size=2, barrier=barrier, **options)
    encode(model, datamodule, tmp_path / "one", **options)
    for split in ("train", "test"):
        a, b = read_split(tmp_path / "one", split), read_split(tmp_path / "two", split)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_leaves_nothing_half_written(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    written = store.write_shard

    def write_shard(*args, **kwargs):
        if len(list((tmp_path / ".z.encoding" / "data").glob("*.parquet"))) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return written(*args, **kwargs)

    monkeypatch.setattr(store, "write_shard", write_shard)
    with pytest.raises(UserError, match=r"could not write the encoded latents .*no space left.*nothing is left"):
        encode_checkpoint(ckpt, tmp_path / "z", shard_batches=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_model_without_latents_is_refused(ckpt: Path, tmp_path: Path, _mnist_files: Path):
    data = Path(shutil.copytree(_mnist_files, tmp_path / "data"))
    args = base_args(data, tmp_path / "runs")
    main([args[0], "--model=GenerativeOptimizationNetwork", *args[4:], "--checkpoint.monitor=val/nn_ratio"])
    gopt = only_run(tmp_path / "runs") / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="GenerativeOptimizationNetwork has no latents to encode"):
        encode_checkpoint(gopt, tmp_path / "z")
    with pytest.raises(UserError, match="which has no latents"):
        LatentDataModule(ckpt_path=str(gopt))
    with pytest.raises(SystemExit, match=r"^gon-lightning: error: GenerativeOptimizationNetwork has no latents"):
        main(["encode", "--ckpt_path", str(gopt), "--out", str(tmp_path / "z")])
    assert not (tmp_path / "z").exists() and not (tmp_path / ".z.encoding").exists()


def test_shards_that_do_not_decode_are_refused(ckpt: Path, tmp_path: Path):
    encode_checkpoint(ckpt, tmp_path / "z")
    (tmp_path / "z" / "data" / "test-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"test-00000.parquet does not decode as a latents shard"):
        read_split(tmp_path / "z", "test")
    with pytest.raises(UserError, match="is not an encoded latents folder"):
        LatentDataModule(folder=str(tmp_path / "nothing"))


def test_probes_are_scikit_learn_on_the_written_latents(ckpt: Path, tmp_path: Path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    card = encode_checkpoint(ckpt, tmp_path / "z")
    train, test = read_split(tmp_path / "z", "train"), read_split(tmp_path / "z", "test")
    scaler = StandardScaler().fit(train["latents"].double().numpy())
    x, x_test = (scaler.transform(s["latents"].double().numpy()) for s in (train, test))
    linear = LogisticRegression(C=1.0, max_iter=1000).fit(x, train["labels"].numpy())
    knn = KNeighborsClassifier(n_neighbors=5).fit(x, train["labels"].numpy())
    assert card["knn_k"] == KNN_K == 5
    assert card["linear_acc"] == (linear.predict(x_test) == test["labels"].numpy()).mean()
    assert card["knn_acc"] == (knn.predict(x_test) == test["labels"].numpy()).mean()
    # benchmarks/encode_check.py, reading the Parquet files without gon-lightning, finds the same
    import subprocess
    import sys

    check = Path(__file__).resolve().parents[1] / "benchmarks" / "encode_check.py"
    done = subprocess.run(
        [sys.executable, str(check), str(tmp_path / "z"), str(tmp_path / "z")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("equal: True") == 2 and "bit for bit: True" in done.stdout
    with pytest.raises(UserError, match="at least 5 training latents"):
        probe_accuracies(np.zeros((3, 2)), np.array([0, 1, 0]), np.zeros((1, 2)), np.array([0]))


def test_latent_datamodule_reads_a_folder(ckpt: Path, tmp_path: Path):
    encode_checkpoint(ckpt, tmp_path / "z", probes=False)
    data = LatentDataModule(folder=str(tmp_path / "z"), batch_size=32)
    assert data.nz == 8 and data.dims == (8,)
    data.setup("fit")
    assert data.card["splits"]["train"] == 256 and data.latents("train").shape == (256, 8)
    batch = next(iter(data.train_dataloader()))
    assert batch["latents"].shape == (32, 8) and batch["labels"].dtype == torch.int64
    torch.rand(3)  # the order is the seed's and the epoch's, whatever else drew from the global generator
    again = data.train_dataloader()
    assert torch.equal(batch["latents"], next(iter(again))["latents"])
    assert not torch.equal(batch["latents"], data.latents("train")[:32])  # shuffled
    again.sampler.set_epoch(1)
    assert not torch.equal(batch["latents"], next(iter(again))["latents"])  # a fresh permutation each epoch
    assert len(next(iter(data.val_dataloader()))["latents"]) == 32  # no val split: the test split
    with pytest.raises(UserError, match="exactly one of"):
        LatentDataModule(folder=str(tmp_path / "z"), ckpt_path=str(ckpt))


def test_latent_datamodule_encodes_a_checkpoint_once(ckpt: Path, monkeypatch: pytest.MonkeyPatch):
    data = LatentDataModule(ckpt_path=str(ckpt))
    assert data.nz == 8 and data.folder.parent == ckpt.parent.parent / "latents"
    data.prepare_data()
    data.setup("fit")
    assert data.card["checkpoint"]["sha256"].startswith(data.folder.name.rsplit("-", 1)[1])
    import gon_lightning.latents.encoding as encoding

    monkeypatch.setattr(encoding, "encode", lambda *a, **k: pytest.fail("the cache was encoded again"))
    again = LatentDataModule(ckpt_path=str(ckpt))
    again.prepare_data()
    again.setup("fit")
    assert torch.equal(again.latents("test"), data.latents("test"))


# --- gon-lightning encode ----------------------------------------------------------------------------------------
def test_encode_command_writes_the_runs_dataset_and_reports_the_probes(ckpt: Path, tmp_path: Path, capsys):
    """From the checkpoint alone (the run's config.yaml gives model and data); the same latents as the Python API's
    encoding of the same model loaded by from_pretrained; no run folder left behind."""
    from gon_lightning import from_pretrained
    from gon_lightning.export import save_pretrained

    run = sorted(p.name for p in ckpt.parents[1].iterdir())
    main(["encode", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "z")])
    printed = capsys.readouterr().out
    card = read_card(tmp_path / "z")
    assert f"encoded 256 train, 64 test latents (nz 8) into {tmp_path / 'z'}" in printed
    assert f"linear {100 * card['linear_acc']:.1f}%, 5-NN {100 * card['knn_acc']:.1f}%" in printed
    assert card["command"].startswith("gon-lightning encode --ckpt_path") and card["encoding"]["batch_size"] == 16
    # no run folder made; the checkpoint's run gains the probes' record, which export's model card reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "z"]
    assert sorted(p.name for p in ckpt.parents[1].iterdir()) == sorted([*run, "latent_probes.json"])
    main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export"), "--num_images", "0"])
    readme = (tmp_path / "export" / "README.md").read_text()
    assert f"| linear (`linear_acc`) | {card['linear_acc']:.4f} |" in readme
    assert f"| 5-NN (`knn_acc`) | {card['knn_acc']:.4f} |" in readme and "name: linear_acc" in readme
    shutil.rmtree(tmp_path / "export")

    model, datamodule = load_run(ckpt)
    save_pretrained(model, tmp_path / "export")
    encode(from_pretrained(tmp_path / "export"), datamodule, tmp_path / "again", probes=False)
    for split in ("train", "test"):
        a, b = read_split(tmp_path / "z", split), read_split(tmp_path / "again", split)
        assert all(torch.equal(a[k], b[k]) for k in a)


def grey_pictures(folder: Path, count: int) -> Path:
    """`count` grey 40 x 40 noise PNGs directly in `folder`: images without labels."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_encode_an_unlabelled_image_folder_and_refuse_its_probes(ckpt: Path, tmp_path: Path, capsys):
    folder = grey_pictures(tmp_path / "pictures", 24)
    args = ["encode", "--ckpt_path", str(ckpt), "--image_folder", str(folder)]
    with pytest.raises(SystemExit, match=r"^gon-lightning: error: --probes: ImageFolderDataModule's images have no"):
        main([*args, "--out", str(tmp_path / "refused"), "--probes", "true"])
    assert not (tmp_path / "refused").exists() and not (tmp_path / ".refused.encoding").exists()
    main([*args, "--out", str(tmp_path / "z")])
    assert "probes: the dataset has no labels" in capsys.readouterr().out
    card = read_card(tmp_path / "z")
    assert sum(card["splits"].values()) == 24 and "linear_acc" not in card
    assert "labels" not in read_split(tmp_path / "z", "train")
    main(["encode", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "off"), "--probes", "false"])  # labelled
    assert "probes: off (--probes false)" in capsys.readouterr().out and "linear_acc" not in read_card(tmp_path / "off")


def test_encode_command_bad_inputs_end_in_one_line_with_nothing_written(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from image_fixtures import broken_files

    folder = grey_pictures(tmp_path / "broken", 24)
    broken_files(folder)
    encode_args = ["encode", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "z")]
    with pytest.raises(SystemExit, match=r"^gon-lightning: error: .*(truncated|empty|garbage)[^\n]*$"):
        main([*encode_args, "--image_folder", str(folder)])
    written = store.write_shard

    def full_disk(folder, split, index, *rest):
        if split == "test":
            raise OSError(errno.ENOSPC, "No space left on device")
        return written(folder, split, index, *rest)

    monkeypatch.setattr(store, "write_shard", full_disk)
    with pytest.raises(SystemExit, match=r"^gon-lightning: error: could not write the encoded latents .*ENOSPC"):
        main([*encode_args, "--shard_batches", "2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "run"]


@pytest.mark.slow
def test_two_ddp_processes_encode_the_latents_one_process_encodes(ckpt: Path, tmp_path: Path):
    """`--trainer.strategy ddp --trainer.devices 2` on the CPU: each process encodes its shards; the same folder."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "gon_lightning", "encode", "--ckpt_path", str(ckpt), "--shard_batches", "3"]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([*command, *ddp, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("encoded 256 train, 64 test latents") == 1  # rank 0 says it
    encode_checkpoint(ckpt, tmp_path / "one", shard_batches=3)
    for split in ("train", "test"):
        a, b = read_split(tmp_path / "one", split), read_split(tmp_path / "two", split)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_card(tmp_path / "two")["linear_acc"] == read_card(tmp_path / "one")["linear_acc"]
