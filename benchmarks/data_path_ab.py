"""In-process A/B of the training data path under the Trainer: the paper-loop GON (`--nz 4 --ngf 1` by default)
fit for `--steps` steps on MNIST5k, in interleaved rounds, with

    new        the DataModule as it is: the mapped cache, the epoch sampler, one gather per batch
    copy       the same with the images copied into the process's own memory (the layout before the mapped cache)
    oldloader  the same copy served by `DataLoader(shuffle=True, drop_last=True)` (the loader before the sampler)

so what differs between contenders is only the data path (a comparison of two checkouts also compares two
processes' start-up and memory layout). CPU time of this process, one thread. Run from the repository root:

    python benchmarks/data_path_ab.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput

from gon_lightning.data import MNIST5kDataModule
from gon_lightning.data.base import InMemoryImages, keep_batch
from gon_lightning.models import GON


def data_module(variant: str, root: str, batch_size: int) -> MNIST5kDataModule:
    dm = MNIST5kDataModule(root=root, batch_size=batch_size)
    dm.prepare_data()
    dm.setup("fit")
    if variant != "new":
        for dataset in dm.datasets.values():
            dataset.images = dataset.images.clone()
    if variant == "oldloader":
        images = dm.datasets["train"].images
        dm.train_dataloader = lambda: DataLoader(
            InMemoryImages(images), batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=keep_batch
        )
    return dm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=4)
    parser.add_argument("--ngf", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    throughput.clock = time.process_time
    options = argparse.Namespace(device="cpu", precision="32-true", channels_last=False)
    root = tempfile.mkdtemp(prefix="gon-data-ab-")
    variants = {v: data_module(v, root, args.batch_size) for v in ("new", "copy", "oldloader")}
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for variant, dm in variants.items():
            run = throughput.lightning_runner(GON(nz=args.nz, ngf=args.ngf), dm, options)
            rates[variant].append(args.steps * args.batch_size / run(args.warmup, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{v} {x[-1]:.0f}" for v, x in rates.items()), flush=True)
    for variant, values in rates.items():
        ratio = statistics.median(x / n for n, x in zip(rates["new"], values, strict=True))
        print(f"{variant:9s} {statistics.median(values):7.0f} images/s, per-round median ratio to new {ratio:.3f}")


if __name__ == "__main__":
    main()
