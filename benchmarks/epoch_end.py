"""Time every piece of epoch-end work in a real `gon-lightning fit` (all defaults: W&B offline when not logged in,
checkpoints, image panels, console lines): each piece is wrapped with a timer, the run is short.

    python benchmarks/epoch_end.py                       # paper GON, 4 epochs of 5 batches, 1 validation batch
    python benchmarks/epoch_end.py --epochs 6 -- --model.init_args.nz 4 --model.init_args.ngf 1

Validation itself is left out (it is evaluation, not bookkeeping). Figures are per call: median and max.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, WandbLogger

from gon_lightning import cli
from gon_lightning.callbacks import checkpointing, images, progress
from gon_lightning.models import base, origin

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
seconds: dict[str, list[float]] = collections.defaultdict(list)


def timed(owner: Any, name: str, label: str) -> None:
    function = getattr(owner, name)
    seconds[label] = []  # report in this order

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label].append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=5, help="training batches per epoch")
    parser.add_argument("fit_args", nargs="*", help="more `gon-lightning fit` options, after --")
    args = parser.parse_args()
    timed(checkpointing.BestAndLastCheckpoint, "on_train_epoch_end", "checkpoints (state, write, link)")
    timed(checkpointing.BestAndLastCheckpoint, "on_validation_end", "checkpoints at validation end")
    timed(checkpointing.AtomicCheckpointIO, "save_checkpoint", "  of which file writes (torch.save, fsync)")
    timed(images.ImagePanels, "on_train_epoch_end", "image panels (schedule, draw, PNGs, logger)")
    timed(origin.OriginModel, "on_train_epoch_end", "model: latent Gaussian fit + epoch means logged")
    timed(base.ImageModel, "train_epoch_means", "  of which epoch means (reduced, cached)")
    timed(base.ImageModel, "on_validation_epoch_end", "model: validation metrics logged (once per epoch)")
    timed(progress.EpochLog, "on_train_epoch_end", "console line (EpochLog)")
    timed(WandbLogger, "log_metrics", "W&B log_metrics (every logging step and epoch end)")
    timed(CSVLogger, "log_metrics", "CSV log_metrics (every logging step and epoch end)")
    timed(CSVLogger, "save", "CSV file written (every logging step and epoch end)")
    timed(progress.TrainingClock, "on_validation_epoch_end", "training clock logged")
    start = time.perf_counter()
    cli.main(
        [
            *("fit", "--config", QUICKSTART, "--runs_root", tempfile.mkdtemp(prefix="gon-epoch-end-")),
            *("--trainer.max_epochs", str(args.epochs), "--trainer.limit_train_batches", str(args.batches)),
            *("--trainer.limit_val_batches", "1", *args.fit_args),
        ]
    )
    print(f"\nfit: {time.perf_counter() - start:.1f} s, {args.epochs} epochs; per call:", file=sys.stderr)
    for label, values in seconds.items():
        print(
            f"  {label:<50} {len(values):3d} calls, median {1e3 * statistics.median(values):8.1f} ms, "
            f"max {1e3 * max(values):8.1f} ms",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
