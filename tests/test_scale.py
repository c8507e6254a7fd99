"""Scaling: DDP equals one process on the same global batch, ranks see disjoint data, SyncBatchNorm is refused for
the second-order origin step, and mixed precision (with the fp16 inner-gradient scaling) matches fp32."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from ddp_worker import Recorder
from pytorch_lightning.plugins import MixedPrecision

from gon_lightning.callbacks.performance import ChannelsLast
from gon_lightning.cli import main
from gon_lightning.data import MNISTDataModule
from gon_lightning.models import GON

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = WORKER.parent.parent


def fit_args(root: Path, out: Path, batch_size: int, *extra: str) -> list[str]:
    """One optimiser step of GON without norm layers and with summed inner loss (see test_ddp_step_...)."""
    return [
        "--model=GON",
        "--model.norm=none",
        "--model.inner_reduction=sum",
        "--data=MNISTDataModule",
        f"--data.root={root}",
        f"--data.batch_size={batch_size}",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={out}",
        *extra,
    ]


def run_worker(out: Path, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), "--", *args],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def image_keys(batches: list[torch.Tensor]) -> list[bytes]:
    return [(image * 255).round().to(torch.uint8).numpy().tobytes() for batch in batches for image in batch]


@pytest.mark.equality
@pytest.mark.slow
def test_ddp_step_equals_single_process_and_ranks_shard_the_data(mnist_root: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo) x batch 128 vs 1 process x batch 256: the whole 256-image training set in one step.

    Equal only where the step is a function of the global batch: BatchNorm normalises with each process's own
    batch (so norm "none"), and the paper's inner "mean" makes each latent scale with 1/batch (so "sum"; with
    "mean", DDP at per-process batch B trains as one process at batch B would, up to gradient averaging).

    In float64: the claim is mathematical equality, and in float32 the bias gradients (sums of 256 x 1024 terms)
    depend on the summation order of the CPU's kernels: 2.9e-4 relative apart on AVX2-only CPUs (Zen 3, or
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 here), 1e-5 on AVX-512 ones. In
    float64 both measured 2.3e-11 relative (4.9e-17 absolute) for the gradients and 1.4e-17 for the parameters
    after the step: near float64's rounding bound for such sums (n u = 2.6e5 x 1.1e-16 = 3e-11), so rtol 1e-8
    leaves a 300-fold margin over that bound on any CPU, while a real difference (a missed allreduce halves a
    gradient) is off by 50%.
    """
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    float64 = "--trainer.precision=64-true"
    run_worker(ddp, fit_args(mnist_root, ddp, 128, "--trainer.devices=2", "--trainer.strategy=ddp", float64))
    cli = main(fit_args(mnist_root, single, 256, "--trainer.devices=1", float64), run=False)  # in-process start-up
    cli.trainer.callbacks.append(Recorder(single))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    rank0, rank1 = torch.load(ddp / "rank0.pt"), torch.load(ddp / "rank1.pt")
    reference = torch.load(single / "rank0.pt")

    # sharding: Lightning's DistributedSampler splits our in-memory DataLoader into disjoint halves
    seen0, seen1 = image_keys(rank0["batches"]), image_keys(rank1["batches"])
    assert len(seen0) == len(seen1) == 128
    assert not set(seen0) & set(seen1)
    assert sorted(seen0 + seen1) == sorted(image_keys(reference["batches"]))

    # the allreduced gradient is the single-process gradient of the global batch, on both ranks
    for name, grad in reference["grads"].items():
        assert grad.dtype == torch.float64
        torch.testing.assert_close(rank0["grads"][name], grad, rtol=1e-8, atol=1e-14)
        torch.testing.assert_close(rank1["grads"][name], grad, rtol=1e-8, atol=1e-14)
    # and so the step (Adam's first step is about lr * sign(grad), lr = 2e-4)
    for name, value in reference["state"].items():
        if name.startswith("latent_"):  # each rank sums the latents it saw: its half of the batch, by design
            continue
        torch.testing.assert_close(rank0["state"][name], value, rtol=0, atol=1e-12)
        torch.testing.assert_close(rank1["state"][name], rank0["state"][name], rtol=0, atol=0)


def test_sync_batchnorm_is_refused_for_the_second_order_step(mnist_root: Path, tmp_path: Path) -> None:
    args = ["fit", *fit_args(mnist_root, tmp_path, 32, "--trainer.strategy=ddp", "--trainer.devices=1")]
    args = [a for a in args if a != "--model.norm=none"] + ["--trainer.sync_batchnorm=true"]
    try:
        with pytest.raises(SystemExit, match=r"SyncBatchNorm.*pytorch#61222"):
            main(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class GradRecorder(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()}


def one_step_grads(root: Path, tmp_path: Path, **trainer_kwargs) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    model = GON(norm="none", inner_reduction="sum")
    data = MNISTDataModule(root=root, batch_size=64)
    recorder = GradRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[recorder],
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=data)
    return recorder.grads


def relative_error(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    num = sum((grads[n].float() - g).square().sum() for n, g in reference.items())
    return float((num / sum(g.square().sum() for g in reference.values())).sqrt())


def test_mixed_precision_step_matches_fp32(mnist_root: Path, tmp_path: Path) -> None:
    """bf16-mixed through the Trainer flag; 16-mixed through Lightning's own fp16 AMP plugin with a GradScaler on
    CPU (the `precision="16-mixed"` flag silently becomes bf16-mixed on CPU, so the plugin is passed explicitly).
    Tolerances: relative L2 error of all parameter gradients of one step, 5% for bf16 (8-bit mantissa) and 1% for
    fp16 (11-bit mantissa)."""
    reference = one_step_grads(mnist_root, tmp_path)
    bf16 = one_step_grads(mnist_root, tmp_path, precision="bf16-mixed")
    scaler = torch.amp.GradScaler("cpu")
    fp16 = one_step_grads(mnist_root, tmp_path, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    assert relative_error(bf16, reference) < 5e-2
    assert relative_error(fp16, reference) < 1e-2
    assert scaler.get_scale() == 2.0**16  # no overflow, so the step was taken, not skipped


class FakeTrainer:
    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.precision_plugin = MixedPrecision("16-mixed", "cpu", scaler)


def test_fp16_inner_gradient_is_scaled_and_divided_back(digits) -> None:
    """The origin step under fp16 autocast with the paper's batch-mean inner loss (latents ~ 1/64 of a sample's
    gradient): unscaled, part of the inner gradient underflows to zero; scaled by the GradScaler's scale and
    divided back it matches fp32."""
    torch.manual_seed(0)
    x = torch.nn.functional.pad(torch.from_numpy(digits[0][:64]).float().div(255), (2, 2, 2, 2))[:, None]
    model = GON(norm="none")
    z32 = model.encode(x, create_graph=False)
    with torch.autocast("cpu", dtype=torch.float16):
        unscaled = model.encode(x, create_graph=False)
        model._trainer = FakeTrainer(torch.amp.GradScaler("cpu", init_scale=2.0**16))
        try:
            scaled = model.encode(x, create_graph=False)
        finally:
            model._trainer = None

    def err(z: torch.Tensor) -> float:
        return float((z - z32).norm() / z32.norm())

    assert scaled.dtype == torch.float32
    assert err(scaled) < 2e-3
    assert err(scaled) < err(unscaled) / 2
    assert (unscaled == 0).sum() > (scaled == 0).sum()


class SyncCounter(pl.Callback):
    """Counts calls that read a tensor's value on the host (a device synchronisation on a GPU) inside training
    batches, except in torch.optim (Adam reads its step counter, a CPU tensor, which is no device sync)."""

    NAMES = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active, self.calls = False, []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active:
                frames = traceback.extract_stack(limit=3)[:-1]
                if not any(f"{os.sep}optim{os.sep}" in frame.filename for frame in frames):
                    self.calls.append((name, frames))
            return original(tensor, *args, **kwargs)

        return counted

    def on_train_batch_start(self, *args) -> None:
        self.active = True

    def on_train_batch_end(self, *args) -> None:
        self.active = False


def test_hot_loop_has_no_host_sync_and_channels_last_applies(mnist_root: Path, monkeypatch) -> None:
    counter = SyncCounter(monkeypatch)
    model = GON()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[counter, ChannelsLast()],
    )
    trainer.fit(model, datamodule=MNISTDataModule(root=mnist_root, batch_size=32))
    assert counter.calls == [], counter.calls[:3]
    weight = model.decoder.net[3].weight  # a 4x4 transposed-convolution kernel
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
