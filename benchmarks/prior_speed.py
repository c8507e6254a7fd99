"""How fast the learned priors train, side by side in one process (ratios; times on a shared machine are noisy).

1. `posthoc`: the post-hoc prior's training throughput under Lightning (FlowMatchingPrior.training_step, AdamW and its
   schedule, the Trainer's loop) against a plain PyTorch loop on the same network, the same batches and the same
   optimiser: the ratio of steps per second (>= 0.9 is the target). Rounds alternate, so load changes hit both.
2. `online`: the OnlinePrior's cost per training step of the quickstart GON (nz 256, ngf 16, batch 64): a GON step
   with and without the callback, alternating rounds; the extra time as a share of the GON's step (<= 5%).
3. `curve`: the time to a prior within 10% of its final fd_lenet: a prior run on a model checkpoint, checkpointed
   every `--every` steps, each checkpoint scored by `gon-lightning evaluate` (1,000 samples); prints step, seconds
   and fd_lenet, and the first step within 10% of the last.

    python benchmarks/prior_speed.py posthoc --steps 200
    python benchmarks/prior_speed.py online --steps 40
    python benchmarks/prior_speed.py curve --ckpt runs/<gon run>/checkpoints/last.ckpt --steps 6000 --every 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gon_lightning.priors import FlowMatchingPrior, OnlinePrior
from gon_lightning.priors.base import cosine_warmup


def latents(n: int = 4096, nz: int = 256) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(0)) * 3 + 1


def lightning_round(z: torch.Tensor, steps: int, batch: int) -> float:
    prior = FlowMatchingPrior(nz=z.shape[1])
    prior.set_statistics(z)
    loader = DataLoader(z, batch_size=batch, shuffle=True, drop_last=True)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    start = time.perf_counter()
    trainer.fit(prior, loader)
    return time.perf_counter() - start


def plain_round(z: torch.Tensor, steps: int, batch: int) -> float:
    """The same network, loss, optimiser and schedule, in a plain loop: what a user would write by hand."""
    prior = FlowMatchingPrior(nz=z.shape[1])
    prior.set_statistics(z)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=prior.lr, weight_decay=prior.weight_decay)
    warmup = min(prior.warmup_steps, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_warmup(step, steps, warmup))
    loader = DataLoader(z, batch_size=batch, shuffle=True, drop_last=True)
    start = time.perf_counter()
    done = 0
    while done < steps:
        for x in loader:
            loss = prior.loss(prior.standardise(x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def posthoc(args: argparse.Namespace) -> None:
    z = latents()
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(args.rounds):
        times["plain"].append(plain_round(z, args.steps, args.batch_size))
        times["lightning"].append(lightning_round(z, args.steps, args.batch_size))
    plain, lightning = (statistics.median(times[k]) for k in ("plain", "lightning"))
    print(f"post-hoc prior, {args.steps} steps of {args.batch_size} (median of {args.rounds} alternating rounds)")
    print(f"  plain PyTorch loop  {plain / args.steps * 1e3:7.1f} ms/step")
    print(f"  Lightning           {lightning / args.steps * 1e3:7.1f} ms/step")
    print(f"  throughput ratio (Lightning / plain): {plain / lightning:.3f}")


def gon_round(steps: int, online: bool, images: torch.Tensor) -> float:
    from gon_lightning.models import GON

    torch.manual_seed(0)
    model = GON(nz=256, ngf=16)
    callbacks = [OnlinePrior()] if online else []
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        accelerator="cpu",
    )
    start = time.perf_counter()
    trainer.fit(model, DataLoader(images, batch_size=64, shuffle=True, drop_last=True))
    return time.perf_counter() - start


def online(args: argparse.Namespace) -> None:
    images = torch.rand(64 * args.steps, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for with_prior in (False, True):
            times[with_prior].append(gon_round(args.steps, with_prior, images))
    plain, with_prior = (statistics.median(times[k]) for k in (False, True))
    print(f"quickstart GON, {args.steps} steps of 64 (median of {args.rounds} alternating rounds)")
    print(f"  GON step               {plain / args.steps * 1e3:7.1f} ms")
    print(f"  GON step + OnlinePrior {with_prior / args.steps * 1e3:7.1f} ms")
    print(f"  online prior's cost: {100 * (with_prior - plain) / plain:.1f}% of the GON's step")


def curve(args: argparse.Namespace) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="prior_curve-"))
    cli = [sys.executable, "-m", "gon_lightning"]
    start = time.perf_counter()
    fit = [*cli, "fit", "--config", "prior", f"--data.ckpt_path={args.ckpt}", f"--runs_root={work}"]
    fit += [f"--trainer.max_steps={args.steps}", "--trainer.logger=CSVLogger", "--checkpoint.save_top_k=-1"]
    fit += [f"--checkpoint.every_n_train_steps={args.every}", "--checkpoint.monitor=null"]
    fit += ["--checkpoint.filename=step{step:06d}"]
    subprocess.run(fit, check=True)
    fit_s = time.perf_counter() - start
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    rows = []
    for ckpt in sorted((run / "checkpoints").glob("step*.ckpt")):
        out = work / ckpt.stem
        subprocess.run([*cli, "evaluate", "--ckpt_path", str(ckpt), "--num_samples", "1000", "--out", str(out)],
                       check=True, capture_output=True)  # fmt: skip
        result = json.loads((out / "sample_quality.json").read_text())
        step = torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"]
        rows.append((step, result["fd_lenet"], result["coverage"]))
        print(f"step {step:6d}  fd_lenet {result['fd_lenet']:8.1f}  coverage {result['coverage']:.3f}", flush=True)
    final = rows[-1][1]
    first = next(step for step, fd, _ in rows if fd <= 1.1 * final)
    print(f"fit: {args.steps} steps in {fit_s:.0f} s; within 10% of the final fd_lenet ({final:.1f}) at step {first}, "
          f"about {fit_s * first / args.steps:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("posthoc")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("online")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("curve")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--work", default=None)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    {"posthoc": posthoc, "online": online, "curve": curve}[args.what](args)


if __name__ == "__main__":
    main()
