"""The training order: every epoch a permutation that every rank shards without repeats, the same as before the
sampler existed, and continued exactly by a resume from a checkpoint written in the middle of an epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_args import base_args, only_run
from conftest import N_TRAIN
from order_probes import image_hashes
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from gon_lightning.cli import main
from gon_lightning.data import MNISTDataModule
from gon_lightning.data.sampler import EpochSampler
from gon_lightning.errors import UserError
from gon_lightning.runs import load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
PROBES = ["--trainer.callbacks+=order_probes.RecordOrder", "--trainer.callbacks+=order_probes.StopAt"]
BATCH = 16


def test_one_process_draws_the_order_as_random_sampler_does():
    """Same permutation from the same global generator, and the generator left in the same state."""
    for epoch in range(3):
        torch.manual_seed(epoch)
        expected = list(RandomSampler(range(50)))
        after = torch.get_rng_state()
        torch.manual_seed(epoch)
        sampler = EpochSampler(50)
        sampler.set_epoch(epoch)
        assert list(sampler) == expected
        assert torch.equal(torch.get_rng_state(), after)


def test_ranks_shard_distributed_samplers_permutation_without_repeats():
    seen = []
    for rank in range(3):
        sampler = EpochSampler(10, num_replicas=3, rank=rank, seed=7)
        reference = DistributedSampler(range(10), num_replicas=3, rank=rank, seed=7, drop_last=True)
        sampler.set_epoch(2), reference.set_epoch(2)
        assert list(sampler) == list(reference) and len(sampler) == 3
        seen += list(sampler)
    assert len(set(seen)) == 9  # one of the ten left out this epoch, none repeated


def test_a_seeded_order_follows_the_trainers_epoch_not_lightnings_count():
    # Lightning's set_epoch passes its count of processed epochs, one ahead after a resume from an epoch-end
    # checkpoint; the permutation is the Trainer's current epoch's (a prior run resumed there trains as the straight)
    sampler, reference = EpochSampler(10, seed=7), EpochSampler(10, seed=7)
    sampler.epoch_of = lambda: 1
    sampler.set_epoch(2), reference.set_epoch(1)
    assert list(sampler) == list(reference) and sampler.epoch_seed == 8


def test_resume_skips_what_the_epoch_served_and_only_in_that_epoch():
    torch.manual_seed(0)
    sampler = EpochSampler(20)
    sampler.set_epoch(4)
    full = list(sampler)
    state = sampler.state(samples_done=8)
    assert state == {"epoch": 4, "seed": sampler.epoch_seed, "samples": 8, "ranks": 1}
    resumed = EpochSampler(20)
    resumed.resume(state)
    resumed.set_epoch(4)
    rng = torch.get_rng_state()
    assert list(resumed) == full[8:]
    assert torch.equal(torch.get_rng_state(), rng)  # the stored seed, nothing drawn
    resumed.set_epoch(5)
    assert len(list(resumed)) == 20  # the next epoch is whole
    assert sampler.state(samples_done=20) is None  # an epoch that is over is not resumed
    with pytest.raises(UserError, match=r"middle of epoch 4 of a run on 1 process.*resume it on 1"):
        EpochSampler(20, num_replicas=2, seed=0).resume(state)


def test_held_out_part_is_rows_of_the_one_mapped_array(mnist_root):
    dm = MNISTDataModule(root=mnist_root, batch_size=BATCH, val_fraction=0.25, download=False)
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert train.images is val.images  # one array for both parts
    assert not train.images.untyped_storage().resizable()  # and it is the mapping, not a copy
    assert len(train) == N_TRAIN - N_TRAIN // 4 and len(val) == N_TRAIN // 4
    assert sorted(train.rows.tolist() + val.rows.tolist()) == list(range(N_TRAIN))
    # batches are the bytes the copies used to give, gathered from the array
    copy = dm.splits["train"]
    indices = [5, 0, 17, 3]
    assert torch.equal(train.__getitems__(indices), copy[indices])
    assert torch.equal(dm.labels["val"], dm.datasets["val"].labels[val.rows])
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    (order, *_) = DataLoader(range(len(copy)), batch_size=BATCH, shuffle=True)  # the loader before the sampler
    assert torch.equal(batch, copy[order])


def test_cache_per_node_is_lightnings_prepare_data_switch(tmp_path):
    assert MNISTDataModule(root=tmp_path).prepare_data_per_node
    assert not MNISTDataModule(root=tmp_path, cache_per_node=False).prepare_data_per_node


def read_order(out: Path, rank: int = 0) -> list[tuple[int, list[str]]]:
    lines = (out / f"rank{rank}.txt").read_text().splitlines()
    return [(int(epoch), hashes.split()) for epoch, hashes in (line.split(" ", 1) for line in lines)]


def all_hashes(root: Path) -> Counter:
    dm = MNISTDataModule(root=root, download=False)
    dm.prepare_data()
    dm.setup("fit")
    return Counter(image_hashes(dm.splits["train"].float() / 255))


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_checkpoint_file(a), load_checkpoint_file(b)
    assert left["global_step"] == right["global_step"]
    for name, tensor in left["state_dict"].items():
        assert torch.equal(right["state_dict"][name], tensor), name


def fit_args(root: Path, runs: Path, *extra: str) -> list[str]:
    # whole epochs of 16 batches (the fake MNIST's 256 images)
    return base_args(root, runs, "--trainer.max_epochs=2", "--trainer.limit_train_batches=1.0", *PROBES, *extra)


# streamed runs need the streaming extra (litdata) and write or copy its chunks (a write takes 16 s here): slow
BACKENDS = pytest.mark.parametrize("backend", ["mapped", pytest.param("streaming", marks=pytest.mark.slow)])


# `equality` (make test-kernels) on the mapped cases only: straight and resumed run are the same computation, which
# the backend only feeds, so the streamed cases would rerun the mapped ones' kernels (about 30 s) for nothing
@pytest.mark.parametrize(
    ("backend", "stop"),
    [
        pytest.param("mapped", 20, marks=pytest.mark.equality),  # the 5th batch of the second epoch
        # the 4th of the first: the resumed epoch's DataLoader iterator draws from the global generator again,
        # and the next epoch's permutation comes from it (RunState sets the generators again before the batch)
        pytest.param("mapped", 3, marks=pytest.mark.equality),
        pytest.param("streaming", 20, marks=pytest.mark.slow),
        pytest.param("streaming", 3, marks=pytest.mark.slow),  # the epoch after the resumed one is whole
    ],
)
def test_mid_epoch_resume_continues_the_exact_order(
    backend: str, stop: int, mnist_root: Path, tmp_path: Path, monkeypatch, backend_args
):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out in (straight, split):
        out.mkdir()
    monkeypatch.setenv("ORDER_OUT", str(straight))
    main(fit_args(mnist_root, straight / "runs", *backend_args(backend, straight)))
    monkeypatch.setenv("ORDER_OUT", str(split))
    monkeypatch.setenv("STOP_AT_STEP", str(stop))
    with pytest.raises(SystemExit):
        main(fit_args(mnist_root, split / "runs", *backend_args(backend, split)))
    run = only_run(split / "runs")
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint_file(last)["global_step"] == stop
    monkeypatch.delenv("STOP_AT_STEP")
    main(["fit", f"--config={run / 'config.yaml'}", f"--ckpt_path={last}"])

    expected = read_order(straight)
    assert read_order(split) == expected  # the interrupted run's batches, then the resumed run's: the same
    images = all_hashes(mnist_root)
    for epoch in (0, 1):
        assert Counter(h for e, batch in expected if e == epoch for h in batch) == images  # each once
    assert_same_weights(only_run(straight / "runs") / "checkpoints" / "last.ckpt", last)


def run_ddp(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "ORDER_OUT": str(out),
        "MASTER_ADDR": "127.0.0.1",
    }
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT", "PL_GLOBAL_SEED"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "gon_lightning", *extra],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc


# not marked `equality` (make test-kernels): both sides of each comparison are the same 2-rank computation, so
# another CPU's kernels change them alike; what kernels can break is rerun there by the cheaper tests of one
# process's exact resume (test_mid_epoch_resume_continues_the_exact_order) and of a DDP step against one process
# (test_scale.py)
@pytest.mark.slow
@BACKENDS
def test_ddp_epochs_see_every_image_once_and_resume_mid_epoch_exactly(
    backend: str, mnist_root: Path, tmp_path: Path, backend_args
):
    """2 CPU ranks (gloo) x 8 batches of 16 per epoch: per epoch the two ranks' images are the training set once;
    stopped in the middle of the second epoch and resumed, each rank sees the batches, and the model ends with
    the weights, of the straight run."""
    # the stream is written here, by rank 0 while the other waits (the other tests read a copy written once)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", *backend_args(backend, tmp_path, written=False)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out in (straight, split):
        out.mkdir()
    proc = run_ddp(straight, *fit_args(mnist_root, straight / "runs", *ddp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.environ["STOP_AT_STEP"] = "11"  # the 4th batch of the second epoch
    try:
        proc = run_ddp(split, *fit_args(mnist_root, split / "runs", *ddp))
    finally:
        del os.environ["STOP_AT_STEP"]
    assert proc.returncode != 0 and "resume with" in proc.stderr, proc.stderr[-3000:]
    run = only_run(split / "runs")
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint_file(last)["global_step"] == 11
    proc = run_ddp(split, "fit", f"--config={run / 'config.yaml'}", f"--ckpt_path={last}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    images = all_hashes(mnist_root)
    for rank in (0, 1):
        assert read_order(split, rank) == read_order(straight, rank)
    for epoch in (0, 1):
        seen = Counter(h for rank in (0, 1) for e, batch in read_order(straight, rank) if e == epoch for h in batch)
        assert seen == images
    assert_same_weights(only_run(straight / "runs") / "checkpoints" / "last.ckpt", last)


def test_a_rank_that_finds_no_cache_after_rank_0_built_it_says_why(tmp_path):
    """With cache_per_node false only global rank 0 builds the cache: a node that cannot see it stops."""
    dm = MNISTDataModule(root=tmp_path, download=False, cache_per_node=False)
    dm.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(UserError, match=r"gon_lightning_32px is missing on this node.*cache_per_node false"):
        dm.setup("fit")


def test_stream_refuses_a_held_out_split_and_names_the_extra(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"val_fraction .*stream"):
        MNISTDataModule(root=tmp_path, stream=str(tmp_path / "stream"), val_fraction=0.1)
    monkeypatch.setitem(sys.modules, "litdata", None)  # not installed
    dm = MNISTDataModule(root=tmp_path, stream=str(tmp_path / "stream"))
    with pytest.raises(UserError, match=r"litdata.*gon-lightning\[streaming\]"):
        dm.setup("fit")


def test_a_stream_written_for_other_images_is_refused(tmp_path):
    stream = tmp_path / "stream"
    stream.mkdir()
    (stream / "gon_lightning.json").write_text('{"dims": [1, 64, 64], "fingerprint": {}, "splits": ["test", "train"]}')
    dm = MNISTDataModule(root=tmp_path, stream=str(stream))
    with pytest.raises(UserError, match=r"stream .* holds \(1, 64, 64\) images .*this one is \(1, 32, 32\)"):
        dm.prepare_data()
    (stream / "gon_lightning.json").write_text('{"dims": [1, 32, 32], "fingerprint": {}, "splits": ["test", "train"]}')
    dm.prepare_data()  # written for these images: nothing to decode (the raw files are not even there)
