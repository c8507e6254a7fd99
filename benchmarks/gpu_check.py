"""Every GPU measurement of gon-lightning in one command, for a session that is lent a GPU for a few minutes.

    python benchmarks/gpu_check.py --out OUT --data DATA     # on the GPU: about 7 minutes; DATA holds MNIST/raw/
    python benchmarks/gpu_check.py --dry-run --out OUT       # here, on the CPU, every check at a tiny size
    python benchmarks/gpu_check.py --dry-run --jobs 2 ...    # the same, two checks at a time

Checks, in order (each in its own process, with its own time limit; one that fails is reported and the next runs):
  cuda-tests     the suite's tests that only run where CUDA exists (pytest -m cuda)
  throughput-*   benchmarks/throughput.py on the GPU: the published loop (a), the plain loop on our data path (b),
                 Lightning's floor (L), our LightningModule (c) and the user's `fit` (d) with every default on, for
                 the paper GON at batch 64 and 512 in fp32, bf16-mixed and 16-mixed; V-GON and Conv AE at batch 64;
                 peak GPU memory where the benchmark reports it.
  size-throughput  benchmarks/size_throughput.py: the GON at 32, 64 and 128 px, plain loop (b), Lightning's floor (L)
                 and ours (c)
  epoch-end      benchmarks/epoch_end.py: every piece of epoch-end work of a real `fit`, per call
  mnist-epoch    one epoch of the real MNIST (60,000 images) with `gon-lightning fit --config gon_mnist` exactly as
                 a user runs it, timed over its second epoch (validation, checkpoint and panels included); the
                 published scripts took about 30 s per epoch on a T4
  prior-*        benchmarks/prior_speed.py: the post-hoc prior's throughput against a plain loop on the same
                 network, the online prior's share of a GON step, and drawing 1,000 latents through each learned
                 sampler (diffusion, flow)
  fp16-batchnorm benchmarks/fp16_batchnorm.py: whether the paper's GON under fp16 AMP skips every step on the GPU
                 as on the CPU (BatchNorm at the origin, docs/performance.md), beside BatchNorm in fp32 and GroupNorm
Writes OUT/gpu_check.md (a table per check, ratios side by side), OUT/gpu_check.json and OUT/gpu_check.log (every
command's output). A check that would start after --budget seconds is reported as not run. What the GPU machine
lacks is prepared by benchmarks/gpu_carry.py, which prints the device command.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RATE = re.compile(r"^\s+\((\w+)\) (\S+).*?\s([\d.]+) images/s$")  # "(c) GON LightningModule ... 812.3 images/s"
RATIO = re.compile(r"\b([a-zA-Z]+/[a-zA-Z]+) = ([\d.]+)")
PUBLISHED_T4_EPOCH_S = 30.0  # the reference scripts on a Tesla T4, per MNIST epoch


@dataclass
class Check:
    name: str
    command: list[str]
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    tail: str = ""


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def throughput_checks(args: argparse.Namespace, root: str) -> list[Check]:
    """The throughput runs: (name, batch, precision, with the user's fit, models, extra options)."""
    # the runs are named by the paper-size batch (64, 512); a dry run uses tiny stand-ins
    if args.dry_run:
        size = ["--nz", "4", "--ngf", "1", "--rounds", "1", "--warmup", "1", "--threads", "1", "--fit-batches", "2"]
        batch_size, steps = {64: 8, 512: 16}, {64: 2, 512: 2}
    else:
        size = ["--rounds", "3", "--warmup", "10"]
        batch_size, steps = {64: 64, 512: 512}, {64: 100, 512: 30}
    device = "cpu" if args.dry_run else "cuda"
    runs: list[tuple[str, int, str, bool, list[str], list[str]]] = []
    for batch in (64, 512):
        for precision in ("32-true", "bf16-mixed", "16-mixed"):
            fit = precision == "32-true" or (
                batch == 64 and precision == "bf16-mixed"
            )  # the user's fit, where it says most
            models = ["GON", "VariationalGON", "ConvAutoencoder"] if batch == 64 and precision == "32-true" else ["GON"]
            runs.append((f"throughput-b{batch}-{precision}", batch, precision, fit, models, []))
    if args.dry_run:  # every code path once: with the user's fit and three models, and a mixed precision without
        runs = [run for run in runs if run[0] in ("throughput-b64-32-true", "throughput-b512-bf16-mixed")]
    checks = []
    for name, batch, precision, fit, models, extra in runs:
        command = python(str(BENCH / "throughput.py"), "--device", device, "--root", root, *size)
        command += ["--batch-size", str(batch_size[batch]), "--steps", str(steps[batch]), "--precision", precision]
        command += ["--models", *models, *extra, *([] if fit else ["--no-fit"])]
        checks.append(Check(name, command, timeout=240 if args.dry_run else 150))
    return checks


def all_checks(args: argparse.Namespace, root: str, work: str) -> list[Check]:
    device = "cpu" if args.dry_run else "cuda"
    checks = [
        Check(
            "cuda-tests",
            python("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(ROOT / "tests"), "-m", "cuda"),
            timeout=120,
        )
    ]
    checks += throughput_checks(args, root)
    sizes = python(str(BENCH / "size_throughput.py"), "--device", device, "--root", root)
    if args.dry_run:
        sizes += ["--sizes", "32", "64", "--nz", "4", "--ngf", "1", "--rounds", "1", "--steps", "1", "--threads", "1"]
        sizes += ["--clock", "cpu"]  # the shared machine's clock, which only a dry run (on the CPU) can take
    else:
        sizes += ["--sizes", "32", "64", "128", "--rounds", "3", "--steps", "50", "--warmup", "10"]
    checks.append(Check("size-throughput", sizes, timeout=240 if args.dry_run else 150))
    epoch_end = python(str(BENCH / "epoch_end.py"), "--epochs", "3", "--batches", "3" if args.dry_run else "50")
    epoch_end += ["--", "--trainer.accelerator", device, "--data.init_args.root", root]
    if args.dry_run:
        epoch_end += ["--model.init_args.nz", "4", "--model.init_args.ngf", "1"]
    checks.append(Check("epoch-end", epoch_end, timeout=180))
    if args.data:
        epoch_file = os.path.join(work, "epoch-seconds")
        fit = python("-m", "gon_lightning", "fit", "--config", str(ROOT / "configs" / "gon_mnist.yaml"))
        fit += ["--data.init_args.root", str(args.data), "--trainer.accelerator", device]
        fit += ["--runs_root", os.path.join(work, "runs"), "--trainer.callbacks+=throughput.EpochTimer"]
        # two epochs and the first step of a third: EpochTimer reads the clock at the start of epochs 1 and 2
        fit += ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2" if args.dry_run else "1.0"]
        if args.dry_run:
            fit += ["--model.init_args.nz", "4", "--model.init_args.ngf", "1", "--trainer.limit_val_batches", "2"]
        env = {"GON_BENCH_EPOCH_FILE": epoch_file, "PYTHONPATH": str(BENCH), "WANDB_MODE": "offline"}
        checks.append(Check("mnist-epoch", fit, timeout=240, env=env))
    # the learned priors: post-hoc throughput against a plain loop, the online prior's share of a GON step, and
    # drawing through each learned sampler
    prior = python(str(BENCH / "prior_speed.py"))
    tiny = args.dry_run
    rounds = ["--rounds", "1" if tiny else "3"]
    posthoc = [*prior, "posthoc", "--device", device, *rounds, "--steps", "3" if tiny else "300"]
    checks.append(Check("prior-posthoc", posthoc + (["--hidden", "16", "--batch-size", "8"] if tiny else []), 240))
    online = [*prior, "online", "--device", device, *rounds, "--steps", "2" if tiny else "100"]
    checks.append(Check("prior-online", online + (["--nz", "4", "--ngf", "1"] if tiny else []), timeout=240))
    draw = [*prior, "sample", "--device", device] + (["--n", "8", "--nz", "4", "--hidden", "16"] if tiny else [])
    checks.append(Check("prior-sample", draw, timeout=240 if tiny else 120))
    fp16 = python(str(BENCH / "fp16_batchnorm.py"), "--device", device, "--root", root)
    # a dry run: the CPU finding of docs/performance.md (the paper's GON skips every step even from a loss scale
    # of 64, where BatchNorm in fp32 and GroupNorm skip none), which tests/test_benchmarks.py reads from its table
    fp16 += ["--steps", "4", "--init-scale", "64"] if args.dry_run else ["--steps", "200"]
    checks.append(Check("fp16-batchnorm", fp16, timeout=240 if args.dry_run else 120))
    return checks


def parse(check: Check, output: str, work: str) -> None:
    if check.name.startswith("throughput"):
        for line in output.splitlines():
            rate = RATE.match(line)
            if rate:  # (c) is one line per model: named by it
                name = f"({rate[1]})" if rate[1] != "c" else f"(c) {rate[2]}"
                check.figures[f"{name} img/s"] = float(rate[3])
            # "  VariationalGON: c/a = ..." names the model of its ratios
            model = re.match(r"^\s+(\w+): ", line)
            prefix = f"{model[1]} " if model and not line.strip().startswith("peak") else ""
            check.figures.update({prefix + name: float(value) for name, value in RATIO.findall(line)})
        memory = re.findall(r"peak GPU memory (\S+): ([\d.]+) MiB", output)
        check.figures.update({f"peak MiB {key}": float(value) for key, value in memory})
    elif check.name == "size-throughput":  # its table: | side | (b) | (L) | (c) | c/b (per round) | c/L (per round) |
        for side, b, lightning, c, c_b, c_l in re.findall(
            r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)[^|]*\| ([\d.]+)", output, re.M
        ):
            check.figures[f"{side}px (b) (L) (c) img/s, c/b, c/L"] = f"{b}, {lightning}, {c}, {c_b}, {c_l}"
    elif check.name == "mnist-epoch":
        path = Path(check.env["GON_BENCH_EPOCH_FILE"])
        if path.is_file():
            seconds = float(path.read_text())
            check.figures = {"epoch s": seconds, "T4 published s": PUBLISHED_T4_EPOCH_S}
            check.figures["x faster than T4"] = PUBLISHED_T4_EPOCH_S / seconds
    elif check.name == "epoch-end":
        total = re.search(r"fit: ([\d.]+) s, (\d+) epochs", output)
        if total:
            check.figures = {"fit s": float(total[1]), "epochs": int(total[2])}
        for label, calls, median in re.findall(r"^\s+(.+?)\s+(\d+) calls, median\s+([\d.]+) ms", output, re.M):
            check.figures[f"{label.strip()} (ms, median of {calls})"] = float(median)
    elif check.name == "fp16-batchnorm":  # its table: variant, last loss, loss scale, steps skipped
        for variant, loss, scale, skipped in re.findall(r"^(\S+)\s+([\d.naif]+)\s+(\S+)\s+(\d+)$", output, re.M):
            check.figures[f"{variant}: last loss, loss scale, skipped steps"] = f"{loss}, {scale}, {skipped}"
    elif check.name.startswith("prior-"):
        for label, value in re.findall(r"^\s*(.+?):? +([\d.]+) ?(?:ms/step|ms|s|%.*)?$", output, re.M):
            check.figures[label.strip()] = float(value)
        ratio = re.search(r"throughput ratio \(Lightning / plain\): ([\d.]+)", output)
        share = re.search(r"the prior's step is ([\d.-]+)% of the GON's step", output)
        difference = re.search(r"with the prior: ([+\d.-]+)%", output)
        if ratio:
            check.figures["Lightning/plain"] = float(ratio[1])
        if share:
            check.figures["online share of GON step %"] = float(share[1])
        if difference:
            check.figures["GON step with/without the online prior, difference %"] = float(difference[1])
    elif check.name == "cuda-tests":
        summary = re.findall(r"^(?:=+ )?(\d+ (?:passed|failed|skipped).*?)(?: in [\d.]+s)?(?: =+)?$", output, re.M)
        check.figures = {"pytest": summary[-1] if summary else "no summary"}


def run(check: Check, log: Any, deadline: float, work: str) -> None:
    if time.monotonic() + 10 > deadline:
        check.status = "not run: out of time (--budget)"
        return
    timeout = min(check.timeout, deadline - time.monotonic())
    env = {**os.environ, **check.env}
    if "PYTHONPATH" in check.env:  # add to, never replace, the caller's path (the carried wheels live there)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [check.env["PYTHONPATH"], os.environ.get("PYTHONPATH")]))
    log.write(f"\n===== {check.name}: {' '.join(check.command)}\n")
    log.flush()
    start = time.monotonic()
    try:
        done = subprocess.run(
            check.command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        output, code = done.stdout, done.returncode
        check.status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired as stopped:
        output = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
        check.status = f"failed: over its {timeout:.0f} s limit"
    check.seconds = time.monotonic() - start
    log.write(output)
    log.flush()
    if check.name == "cuda-tests" and check.status.startswith("failed (exit 5)"):  # pytest: no test ran
        check.status = "failed: no test marked cuda was collected"
    check.tail = "\n".join(output.strip().splitlines()[-15:])
    try:
        parse(check, output, work)
    except Exception as error:  # a figure we cannot read is reported, never fatal
        check.figures["parse error"] = repr(error)
    print(f"{check.name}: {check.status} ({check.seconds:.0f} s)", flush=True)


def cell(key: str, value: float) -> str:
    """Ratios with two decimals, rates and memory as whole numbers."""
    return f"{value:.2f}" if RATIO.search(f"{key} = 1") else f"{value:.0f}"


def markdown(checks: list[Check], header: str) -> str:
    lines = [f"# gon-lightning GPU check\n\n{header}\n", "| check | status | seconds |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.status} | {c.seconds:.0f} |" for c in checks]
    throughput = [c for c in checks if c.name.startswith("throughput") and c.figures]
    if throughput:
        columns = list(dict.fromkeys(key for c in throughput for key in c.figures))
        lines += ["", "## Throughput (images/s, ratios of the medians)", ""]
        lines += ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for c in throughput:
            cells = [cell(key, c.figures[key]) if key in c.figures else "" for key in columns]
            lines.append(f"| {c.name.removeprefix('throughput-')} | " + " | ".join(cells) + " |")
    for c in checks:
        if c.figures and not c.name.startswith("throughput"):
            lines += ["", f"## {c.name}", ""]
            lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in c.figures.items()]
    failed = [c for c in checks if c.status.startswith("failed")]
    for c in failed:
        lines += ["", f"## {c.name} failed: last lines", "", "```", c.tail, "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.md, .json and .log")
    parser.add_argument("--data", type=Path, help="a data root holding MNIST/raw/ (the real-MNIST epoch)")
    parser.add_argument("--dry-run", action="store_true", help="every check on the CPU at a tiny size")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds; no check starts after them")
    parser.add_argument(
        "--jobs", type=int, default=1, help="with --dry-run: checks side by side (on the GPU they are timed one by one)"
    )
    args = parser.parse_args()
    if args.jobs < 1 or (args.jobs > 1 and not args.dry_run):
        parser.error("--jobs: a positive number, above 1 only with --dry-run (the GPU checks time one at a time)")
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    work = tempfile.mkdtemp(prefix="gon-gpu-check-")
    root = os.path.join(work, "data")  # MNIST5k for the throughput runs, decoded once and shared
    checks = all_checks(args, root, work)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CPU)"
    header = (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {device}, torch {torch.__version__}, "
        f"{'dry run (tiny sizes, CPU)' if args.dry_run else 'full sizes'}; command: "
        f"`python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`"
    )
    with open(args.out / "gpu_check.log", "w") as log:
        if args.jobs == 1:
            for check in checks:
                run(check, log, deadline, work)
                (args.out / "gpu_check.md").write_text(markdown(checks, header))  # what is done survives a kill
        else:  # a dry run's checks side by side: each one's output goes to the log whole when it ends
            for check in checks:  # and each one shares the cores: its time limit grows alike
                check.timeout *= args.jobs
            lock = threading.Lock()

            def run_one(check: Check) -> None:
                output = io.StringIO()
                run(check, output, deadline, work)
                with lock:
                    log.write(output.getvalue())
                    log.flush()
                    (args.out / "gpu_check.md").write_text(markdown(checks, header))

            with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(run_one, checks))
    result = {"header": header, "checks": [{k: v for k, v in vars(c).items() if k != "env"} for c in checks]}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {args.out / 'gpu_check.md'}, gpu_check.json, gpu_check.log")
    failed = [c.name for c in checks if c.status.startswith("failed")]
    skipped = [c.name for c in checks if c.status.startswith("not run")]
    if failed or skipped:
        sys.exit(
            (f"failed checks: {', '.join(failed)} (their last lines are in gpu_check.md)" if failed else "")
            + (f"{'; ' if failed else ''}not run (--budget): {', '.join(skipped)}" if skipped else "")
        )


if __name__ == "__main__":
    main()
