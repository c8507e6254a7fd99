"""What a long run meets: a step-bounded run continued, a loss that goes non-finite, a disk that fills."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from cli_args import base_args, only_run
from long_run_probes import DivergingAutoencoder
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins import MixedPrecision
from test_order import PROBES, read_order
from test_scale import SyncCounter

from gon_lightning.callbacks import DivergenceError, DivergenceGuard, checkpointing, divergence, images
from gon_lightning.cli import main
from gon_lightning.data import MNISTDataModule, cache
from gon_lightning.errors import WriteError
from gon_lightning.models import GON
from gon_lightning.runs import load_checkpoint_file


def step_bounded(root: Path, runs: Path, max_steps: int, *extra: str) -> list[str]:
    # the V-GON: its reparameterisation draws from the global generator, which a resume must restore exactly
    return [
        "fit",
        "--model=VariationalGON",
        *base_args(
            root,
            runs,
            "--trainer.max_epochs=-1",
            f"--trainer.max_steps={max_steps}",
            "--trainer.limit_train_batches=1.0",
            *PROBES,
            *extra,
        )[2:],
    ]


@pytest.mark.equality
@pytest.mark.parametrize("backend", ["mapped", pytest.param("streaming", marks=pytest.mark.slow)])
def test_a_step_bounded_run_continued_is_the_straight_run(
    backend: str, mnist_root: Path, tmp_path: Path, monkeypatch, capsys, backend_args
):
    """Stopped by max_steps in its first epoch (step 6 of 16) and continued to step 20 (the 5th batch of the second
    epoch): the same batches, weights, epoch and step as the run that went to step 20 at once."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out in (straight, split):
        out.mkdir()
    monkeypatch.setenv("ORDER_OUT", str(straight))
    main(step_bounded(mnist_root, straight / "runs", 20, *backend_args(backend, straight)))
    monkeypatch.setenv("ORDER_OUT", str(split))
    main(step_bounded(mnist_root, split / "runs", 6, *backend_args(backend, split)))
    run = only_run(split / "runs")
    last = run / "checkpoints" / "last.ckpt"
    assert f"train on: gon-lightning fit --config {run / 'config.yaml'} --ckpt_path {last} --trainer.max_steps 12" in (
        capsys.readouterr().out
    )
    assert load_checkpoint_file(last)["global_step"] == 6
    main(["fit", f"--config={run / 'config.yaml'}", f"--ckpt_path={last}", "--trainer.max_steps=20"])

    assert read_order(split) == read_order(straight)
    reference = load_checkpoint_file(only_run(straight / "runs") / "checkpoints" / "last.ckpt")
    continued = load_checkpoint_file(last)
    assert (continued["epoch"], continued["global_step"]) == (reference["epoch"], reference["global_step"]) == (1, 20)
    assert continued["loops"]["fit_loop"]["epoch_progress"] == reference["loops"]["fit_loop"]["epoch_progress"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(continued["state_dict"][name], tensor), name


def diverging(root: Path, runs: Path, model: str, at: int, *extra: str) -> list[str]:
    args = base_args(root, runs, "--trainer.max_epochs=3", "--trainer.limit_train_batches=1.0", *extra)
    args[1] = f"--model=long_run_probes.{model}"  # the GON of base_args, made to diverge
    return [*args, f"--model.init_args.diverge_at={at}"]


def exit_message(args: list[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert isinstance(stopped.value.code, str), stopped.value.code  # one line, exit status 1
    return stopped.value.code


def assert_finite(checkpoint: Path) -> None:
    state = load_checkpoint_file(checkpoint)["state_dict"]
    assert all(tensor.isfinite().all() for tensor in state.values() if tensor.is_floating_point())


@pytest.mark.parametrize(
    ("model", "what", "quantity"),
    [
        ("DivergingGON", "loss", "the loss"),
        ("DivergingGON", "gradients", "the gradients"),
        # binary cross-entropy raises at step 21, fed the NaN the weights decode: the divergence is what is said
        ("DivergingVGON", "loss", "the loss"),
    ],
)
def test_a_run_that_diverges_stops_with_one_line_and_keeps_its_last_good_checkpoint(
    model: str, what: str, quantity: str, mnist_root: Path, tmp_path: Path
):
    """Step 20 (the 4th batch of the second epoch) goes non-finite: the run stops there with one line, and
    last.ckpt stays the end of the first epoch, the last good state (no checkpoint holds a later one)."""
    runs = tmp_path / "runs"
    message = exit_message(diverging(mnist_root, runs, model, 20, f"--model.init_args.diverging={what}"))
    run = only_run(runs)
    last = run / "checkpoints" / "last.ckpt"
    assert message.startswith(f"gon-lightning: error: training diverged: {quantity} went non-finite at step 20 ")
    assert f"the last good checkpoint is kept: {last} (epoch 0, step 16) still loads" in message
    assert "--model.init_args.lr" in message and "gradient_clip_val" in message and "\n" not in message
    assert load_checkpoint_file(last)["global_step"] == 16
    for checkpoint in (run / "checkpoints").glob("*.ckpt"):
        assert_finite(checkpoint)


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_nothing(mnist_root: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    message = exit_message(diverging(mnist_root, runs, "DivergingGON", 3, "--divergence.check_every_n_steps=2"))
    assert "went non-finite at step 3 (epoch 0)" in message
    assert "no checkpoint was written before it (the run folder is removed)" in message
    assert not runs.exists()


def fail_after(monkeypatch, target: object, name: str, calls: int, error: int) -> None:
    """`target.name` works `calls` times, then fails as a full (read-only, forbidden...) disk makes a write fail:
    an OSError with that errno and no file name (a failed write() names none)."""
    original, count = getattr(target, name), [0]

    def write(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise OSError(error, os.strerror(error))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, write)


def two_epochs(root: Path, runs: Path) -> list[str]:
    return base_args(root, runs, "--trainer.max_epochs=2", "--images.every_n_epochs=1")


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_last_checkpoint_still_loads(
    mnist_root: Path, tmp_path: Path, monkeypatch
):
    runs = tmp_path / "runs"
    fail_after(monkeypatch, checkpointing.torch, "save", 1, errno.ENOSPC)  # the second epoch's checkpoint
    message = exit_message(two_epochs(mnist_root, runs))
    folder = only_run(runs) / "checkpoints"
    assert message.startswith("gon-lightning: error: could not write checkpoint ") and "\n" not in message
    assert message.endswith(
        f" (epoch 1, step 4) to {folder}: no space left on the device (ENOSPC); {folder / 'last.ckpt'} (epoch 0, "
        "step 2) still loads; free space (or make the folder writable) and resume from it"
    )
    assert load_checkpoint_file(folder / "last.ckpt")["global_step"] == 2
    assert not list(folder.glob(".*.part"))


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS])
def test_a_panel_that_cannot_be_written_is_one_line(error: int, mnist_root: Path, tmp_path: Path, monkeypatch):
    runs = tmp_path / "runs"
    fail_after(monkeypatch, images, "save_image", 4, error)  # the second epoch's panels
    message = exit_message(two_epochs(mnist_root, runs))
    run = only_run(runs)
    assert message.startswith(f"gon-lightning: error: could not write the image panels of epoch0001 to {run}/images")
    assert f"({errno.errorcode[error]}); {run / 'checkpoints' / 'last.ckpt'} (epoch 0, step 2) still loads" in message


def test_a_full_disk_under_the_metrics_is_one_line_naming_their_folder(mnist_root: Path, tmp_path: Path, monkeypatch):
    runs = tmp_path / "runs"
    fail_after(monkeypatch, ExperimentWriter, "save", 1, errno.EDQUOT)
    message = exit_message(two_epochs(mnist_root, runs))
    run = only_run(runs)
    assert message.startswith(
        f"gon-lightning: error: could not write the metrics and logs to {run / 'logs' / 'version_0'}: the disk quota "
        "is exceeded (EDQUOT); "
    )


def test_a_cache_build_that_runs_out_of_space_leaves_no_half_cache(mnist_root: Path, monkeypatch):
    fail_after(monkeypatch, cache.os, "posix_fallocate", 1, errno.ENOSPC)  # the test split's images
    dm = MNISTDataModule(root=mnist_root, download=False)
    with pytest.raises(WriteError) as failed:
        dm.prepare_data()
    assert str(failed.value) == (
        f"could not write the decoded cache to {mnist_root / 'MNIST'}: no space left on the device (ENOSPC); "
        "nothing of it is left behind (it is built aside and renamed into place when whole)"
    )
    assert sorted(p.name for p in (mnist_root / "MNIST").iterdir()) == ["raw"]


def fp16_fit(root: Path, diverge_at: int, every_step: bool, **guard: Any) -> tuple[pl.Trainer, DivergingAutoencoder]:
    """A tiny autoencoder trained under 16-mixed on the CPU (Lightning turns `precision="16-mixed"` into bf16 on the
    CPU; the plugin itself runs torch's CPU GradScaler), its step `diverge_at` (or every step from it on) going
    non-finite as an fp16 overflow does."""
    model = DivergingAutoencoder(nz=8, ngf=4, diverge_at=diverge_at, every_step=every_step)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=24,
        limit_val_batches=0,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
        callbacks=[DivergenceGuard(**guard)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, MNISTDataModule(root=root, batch_size=16, download=False))
    return trainer, model


def test_fp16_steps_the_grad_scaler_skips_are_not_divergence(mnist_root: Path):
    trainer, model = fp16_fit(mnist_root, diverge_at=5, every_step=False)
    assert trainer.global_step == 24 and trainer.precision_plugin.scaler.get_scale() < 1.0  # a skipped step
    assert all(p.isfinite().all() for p in model.parameters())


def test_fp16_diverges_when_the_loss_scale_collapses(mnist_root: Path):
    # the scale halves at every skipped step: 1 -> below 1e-4 at the 14th
    expected = r"overflowed fp16 and the loss scale fell below 0.0001 at step 14 .*bf16-mixed instead of 16-mixed"
    with pytest.raises(DivergenceError, match=expected):
        fp16_fit(mnist_root, diverge_at=1, every_step=True, check_every_n_steps=4)


def test_the_divergence_check_reads_nothing_on_the_host_between_its_checks(mnist_root: Path, monkeypatch):
    """Each step's loss and gradient norm stay on the device: no host read inside training batches (a GPU would
    wait for its queue at each); the guard reads them at its checks only (every 4 steps here: none in these 3). The
    CPU stands in for a GPU here: on the CPU itself the guard reads each step at once (the next test)."""
    monkeypatch.setattr(divergence, "READ_AT_ONCE", ())
    counter = SyncCounter(monkeypatch)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[DivergenceGuard(check_every_n_steps=4), counter],  # the guard's batch end inside the count
    )
    trainer.fit(GON(nz=8, ngf=4), datamodule=MNISTDataModule(root=mnist_root, batch_size=32, download=False))
    assert counter.calls == [], counter.calls[:3]


def test_on_the_cpu_no_tensor_of_the_divergence_check_outlives_its_step(mnist_root: Path):
    """Issue 38: tensors kept across steps were small allocations between each step's large ones, and a hundred of
    them alive kept glibc's heap from returning the freed batch buffers (a DDP rank of the GON at 128 px grew by
    about 100 MB between checks). On the CPU each step's values are plain numbers."""
    guard, seen = DivergenceGuard(check_every_n_steps=100), []

    class Look(pl.Callback):  # after the guard's batch end: what it keeps until its next check
        def on_train_batch_end(self, *args: Any) -> None:
            seen.append(list(guard._recorded))

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[guard, Look()],
    )
    trainer.fit(GON(nz=8, ngf=4), datamodule=MNISTDataModule(root=mnist_root, batch_size=32, download=False))
    assert [len(step) for step in seen] == [1, 2, 3]  # recorded, not yet checked
    assert all(isinstance(value, float) for step in seen[-1] for value in step), seen[-1]


def test_non_finite_weights_are_never_written_whatever_made_them(tmp_path: Path):
    """The last line of defence: a checkpoint whose weights are not finite is refused before it is written."""
    model = GON(nz=8, ngf=4)
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[DivergenceGuard()], default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(DivergenceError, match="the weights went non-finite"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()
