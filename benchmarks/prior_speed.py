"""How fast the learned priors train, side by side in one process (ratios; times on a shared machine are noisy).

1. `posthoc`: the post-hoc prior's training throughput under Lightning (FlowMatchingPrior.training_step, AdamW and its
   schedule, the Trainer's loop) against a plain PyTorch loop on the same network, the same batches and the same
   optimiser: the ratio of steps per second (>= 0.9 is the target). Rounds alternate, so load changes hit both.
2. `online`: the OnlinePrior's cost per training step of the quickstart GON (nz 256, ngf 16, batch 64), as a share
   of the GON's step (<= 5% is the target), two ways: timed inside the run (the callback's own step against the rest
   of the same training step, so load changes hit both), and a GON step with and without the callback in
   alternating rounds (what the whole run pays; noisier, the difference of two times).
3. `sample`: the time to draw 1,000 latents through each learned sampler (`diffusion`: 100 Euler steps; `flow`: the
   inverse of its autoregressive transforms) at the default sizes, nz 256.
4. `curve`: the time to a prior within 10% of its final fd_lenet: a prior run on a model checkpoint, checkpointed
   every `--every` steps, each checkpoint scored by `gon-lightning evaluate` (1,000 samples); prints step, seconds
   and fd_lenet, and the first step within 10% of the last.

    python benchmarks/prior_speed.py posthoc --steps 200
    python benchmarks/prior_speed.py online --steps 40
    python benchmarks/prior_speed.py sample --device cuda
    python benchmarks/prior_speed.py curve --ckpt runs/<gon run>/checkpoints/last.ckpt --steps 12000 --every 2000
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


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_trainer(steps: int, device: str, callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    """A Trainer of `steps` steps on one device with nothing beside the loop (no logger, checkpoints, bars)."""
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        accelerator=device,
        devices=1,
    )


def lightning_round(z: torch.Tensor, steps: int, batch: int, device: str, hidden: int) -> float:
    prior = FlowMatchingPrior(latent_size=z.shape[1], hidden=hidden)
    prior.set_statistics(z)
    loader = DataLoader(z, batch_size=batch, shuffle=True, drop_last=True)
    trainer = bare_trainer(steps, device)
    start = time.perf_counter()
    trainer.fit(prior, loader)
    sync(device)
    return time.perf_counter() - start


def plain_round(z: torch.Tensor, steps: int, batch: int, device: str, hidden: int) -> float:
    """The same network, loss, optimiser and schedule, in a plain loop: what a user would write by hand."""
    prior = FlowMatchingPrior(latent_size=z.shape[1], hidden=hidden).to(device)
    prior.set_statistics(z)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=prior.lr, weight_decay=prior.weight_decay)
    warmup = min(prior.warmup_steps, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_warmup(step, steps, warmup))
    loader = DataLoader(z, batch_size=batch, shuffle=True, drop_last=True)
    start = time.perf_counter()
    done = 0
    while done < steps:
        for x in loader:
            loss = prior.loss(prior.standardise(x.to(device, non_blocking=True)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            if done == steps:
                break
    sync(device)
    return time.perf_counter() - start


def posthoc(args: argparse.Namespace) -> None:
    z = latents()
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(args.rounds):
        times["plain"].append(plain_round(z, args.steps, args.batch_size, args.device, args.hidden))
        times["lightning"].append(lightning_round(z, args.steps, args.batch_size, args.device, args.hidden))
    plain, lightning = (statistics.median(times[k]) for k in ("plain", "lightning"))
    print(f"post-hoc prior, {args.steps} steps of {args.batch_size} (median of {args.rounds} alternating rounds)")
    print(f"  plain PyTorch loop  {plain / args.steps * 1e3:7.1f} ms/step")
    print(f"  Lightning           {lightning / args.steps * 1e3:7.1f} ms/step")
    print(f"  throughput ratio (Lightning / plain): {plain / lightning:.3f}")


class StepClock(pl.Callback):
    """The time from one training batch's start to the next's: a step with everything after it (the online prior's
    step runs in on_train_batch_end), without the fit's start-up."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        self.starts.append(time.perf_counter())

    def seconds_per_step(self, warmup: int = 3) -> float:
        gaps = [b - a for a, b in zip(self.starts[warmup:], self.starts[warmup + 1 :], strict=False)]
        return statistics.median(gaps)


class TimedOnlinePrior(OnlinePrior):
    """OnlinePrior with its per-batch step timed (synchronised on a GPU)."""

    def __init__(self, device: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.device = device
        self.seconds: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        start = time.perf_counter()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        sync(self.device)
        self.seconds.append(time.perf_counter() - start)


def gon_round(
    steps: int, online: bool, images: torch.Tensor, device: str, nz: int, ngf: int, prior_args: dict | None = None
) -> tuple[float, float]:
    """A GON's fit of `steps` steps, with or without the online prior: the median seconds of a whole training step,
    and of the prior's share of it (0 without)."""
    from gon_lightning.models import GON

    torch.manual_seed(0)
    model = GON(nz=nz, ngf=ngf)
    clock = StepClock(device)
    prior = TimedOnlinePrior(device, prior_args=prior_args) if online else None
    trainer = bare_trainer(steps, device, [clock, prior] if prior else [clock])
    trainer.fit(model, DataLoader(images, batch_size=64, shuffle=True, drop_last=True))
    warmup = min(3, steps // 3)
    return clock.seconds_per_step(warmup), statistics.median(prior.seconds[warmup:]) if prior else 0.0


def online(args: argparse.Namespace) -> None:
    images = torch.rand(64 * args.steps, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    prior_args = {k: v for k, v in (("hidden", args.prior_hidden), ("depth", args.prior_depth)) if v}
    plain, whole, inside = [], [], []
    for _ in range(args.rounds):
        plain.append(gon_round(args.steps, False, images, args.device, args.nz, args.ngf, prior_args)[0])
        step, prior = gon_round(args.steps, True, images, args.device, args.nz, args.ngf, prior_args)
        whole.append(step)
        inside.append(prior / (step - prior))
    plain_s, whole_s = statistics.median(plain), statistics.median(whole)
    print(f"GON nz {args.nz} ngf {args.ngf}, batch 64, OnlinePrior {prior_args or 'defaults'}: median step over "
          f"{args.steps} steps, median of {args.rounds} alternating rounds")  # fmt: skip
    print(f"  timed inside the run: the prior's step is {100 * statistics.median(inside):.1f}% of the GON's step "
          f"(rounds: {', '.join(f'{100 * r:.1f}%' for r in inside)})")  # fmt: skip
    print(f"  GON step {plain_s * 1e3:.1f} ms alone, {whole_s * 1e3:.1f} ms with the prior: "
          f"{100 * (whole_s - plain_s) / plain_s:+.1f}% (the difference of two timed runs)")  # fmt: skip


def sample(args: argparse.Namespace) -> None:
    from gon_lightning.priors import NormalizingFlowPrior

    z = latents(nz=args.nz)
    print(f"drawing {args.n} latents (nz {args.nz}) on {args.device}")
    for prior in (
        FlowMatchingPrior(latent_size=args.nz, hidden=args.hidden),
        NormalizingFlowPrior(latent_size=args.nz),
    ):
        prior.set_statistics(z)
        prior.to(args.device).eval()
        prior.sample(8)  # warm-up
        sync(args.device)
        start = time.perf_counter()
        prior.sample(args.n)
        sync(args.device)
        print(f"  sampler {prior.sampler_name}: {time.perf_counter() - start:.3f} s")


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
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("online")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--prior-hidden", type=int, default=None, help="the online prior's width (default OnlinePrior's)")
    p.add_argument("--prior-depth", type=int, default=None, help="its residual blocks (default OnlinePrior's)")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("sample")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("curve")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--work", default=None)
    args = parser.parse_args()
    {"posthoc": posthoc, "online": online, "sample": sample, "curve": curve}[args.what](args)


if __name__ == "__main__":
    main()
