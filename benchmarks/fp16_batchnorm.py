"""fp16 mixed precision and BatchNorm at the origin: does the GON train, or does its GradScaler skip every step?

At z0 = 0 every image decodes to the same first activation, so the decoder's first BatchNorm sees a batch of zero
variance, and the origin step's double backward through it overflows fp16 (docs/performance.md, "Precision").
This trains the paper's GON (MNIST5k, batch 64, one seed) for `--steps` steps under fp16 AMP with a GradScaler,
in four variants side by side:

    fp32          the reference, no autocast;
    batch         the paper's BatchNorm under fp16 AMP, as `--trainer.precision 16-mixed` runs it;
    batch-fp32    the same, with the BatchNorm layers run in fp32 inside the autocast (apex's "keep BatchNorm in
                  fp32"): the candidate fix, applied here only;
    group         `model.norm: group` under fp16 AMP.

and prints each one's loss at the last step, the loss scale and how many steps the scaler skipped. On the CPU
Lightning turns the `16-mixed` flag into bf16, so its fp16 plugin is passed explicitly (as on a GPU). Run from the
repository root:

    python benchmarks/fp16_batchnorm.py --steps 40                   # the CPU
    python benchmarks/fp16_batchnorm.py --steps 200 --device cuda    # a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import MixedPrecision
from torch import nn

from gon_lightning.data import MNIST5kDataModule
from gon_lightning.models import GON

VARIANTS = ("fp32", "batch", "batch-fp32", "group")


class ScaleLog(pl.Callback):
    """The loss of every step and the steps the GradScaler skipped (its scale fell)."""

    def __init__(self, scaler: torch.amp.GradScaler | None) -> None:
        self.scaler, self.losses, self.skipped = scaler, [], 0
        self._scale = scaler.get_scale() if scaler is not None else 1.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.skipped += scale < self._scale
            self._scale = scale


@contextlib.contextmanager
def batchnorm_in_fp32() -> Iterator[None]:
    """BatchNorm layers compute in fp32 inside an autocast region (the candidate fix, for this measurement)."""
    forward = nn.modules.batchnorm._BatchNorm.forward

    def fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or not torch.is_autocast_enabled(x.device.type):
            return forward(self, x)
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x.float())

    nn.modules.batchnorm._BatchNorm.forward = fp32_forward
    try:
        yield
    finally:
        nn.modules.batchnorm._BatchNorm.forward = forward


def train(variant: str, steps: int, device: str, root: Path, seed: int, init_scale: float) -> ScaleLog:
    pl.seed_everything(seed, verbose=False)
    model = GON(norm="group" if variant == "group" else "batch")
    scaler = None if variant == "fp32" else torch.amp.GradScaler(device, init_scale=init_scale)
    log = ScaleLog(scaler)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        plugins=[MixedPrecision("16-mixed", device, scaler)] if scaler is not None else None,
        callbacks=[log],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    with batchnorm_in_fp32() if variant == "batch-fp32" else contextlib.nullcontext():
        trainer.fit(model, MNIST5kDataModule(root=root / "data", batch_size=64))
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-scale", type=float, default=2.0**16, help="the GradScaler's first scale")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--root", type=Path, default=None, help="data and scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print(f"GON on MNIST5k, batch 64, seed {args.seed}, {args.steps} steps on {args.device}")
        print(f"{'variant':<12} {'last loss':>10} {'loss scale':>11} {'skipped':>8}")
        for variant in args.variants:
            log = train(variant, args.steps, args.device, root, args.seed, args.init_scale)
            scale = f"{log.scaler.get_scale():.4g}" if log.scaler is not None else "-"
            print(f"{variant:<12} {log.losses[-1]:>10.4f} {scale:>11} {log.skipped:>8}", flush=True)


if __name__ == "__main__":
    main()
