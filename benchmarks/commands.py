"""Cost of a command beyond the import: `fit` of one step and `test` of its checkpoint on MNIST5k, against a bare
`python -c "import gon_lightning.cli"`, in interleaved rounds; median CPU seconds (user + system of the finished
process, which other jobs on a shared machine disturb less than wall time) and median wall seconds.

    python benchmarks/commands.py --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def timed(command: list[str], cwd: str) -> tuple[float, float]:
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="gon-commands-")
    runs, cli = f"{work}/runs", [sys.executable, "-m", "gon_lightning"]
    fit = [*cli, "fit", "--config", QUICKSTART, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    fit += ["--runs_root", runs]
    timed(fit, work)  # a checkpoint to test, and the data cache every later command finds
    (checkpoint,) = Path(runs).glob("*/checkpoints/last.ckpt")
    commands = {
        "python -c 'import gon_lightning.cli'": [sys.executable, "-c", "import gon_lightning.cli"],
        "fit, 1 step": fit,
        "test last.ckpt": [*cli, "test", "--config", QUICKSTART, "--ckpt_path", str(checkpoint), "--runs_root", runs],
    }
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for r in range(args.rounds):
        for name, command in commands.items():
            seconds[name].append(timed(command, work))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1][0]:.1f} s" for n, v in seconds.items()))
    base = statistics.median(cpu for cpu, _ in seconds["python -c 'import gon_lightning.cli'"])
    for name, values in seconds.items():
        cpu, wall = statistics.median(c for c, _ in values), statistics.median(w for _, w in values)
        print(f"  {name:<40} CPU {cpu:6.2f} s (beyond the import {cpu - base:+.2f} s), wall {wall:6.2f} s")


if __name__ == "__main__":
    main()
