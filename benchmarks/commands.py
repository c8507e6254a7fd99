"""Cost of a command beyond the import: `fit` of one step and `test` of its checkpoint on MNIST5k, against a bare
`python -c "import gon_lightning.cli"`, in interleaved rounds; median CPU seconds (user + system of the finished
process, which other jobs on a shared machine disturb less than wall time) and median wall seconds.

"Beyond the import" is measured twice: as the difference of the medians (command minus bare import), and inside
each command's process (its CPU from the end of `import gon_lightning.cli` to its last exit handler, W&B's
teardown included, the W&B service process not): on a shared machine the bare import alone varies by half a
second between rounds, which swamps the difference; the in-process figure does not carry that variance.

    python benchmarks/commands.py --rounds 3
    python benchmarks/commands.py --rounds 5 --threads 1             # a shared CPU: no thread spinning
    python benchmarks/commands.py --rounds 5 --threads 1 --baseline /tmp/base   # A/B against another checkout

`--baseline DIR` runs every command a second time with the `gon_lightning` package of DIR (a checkout of another
commit, e.g. `git worktree add /tmp/base main`) first on PYTHONPATH, interleaved with this checkout's runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
QUICKSTART = str(HERE / "configs" / "quickstart.yaml")
# `python -m gon_lightning ARGS`, reporting the process's CPU seconds from the end of the import to its exit
AFTER_IMPORT = """
import atexit, resource, sys
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
atexit.register(lambda: sys.stderr.write(f"\\nCPU after the import: {cpu() - start:.4f}\\n"))  # runs last
import gon_lightning.cli
start = cpu()
sys.argv[0] = "gon-lightning"
gon_lightning.cli.console_main()
"""


def timed(command: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, float]:
    """CPU and wall seconds of the command, and its CPU after the import (0 where it does not report one)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    reported = [line for line in done.stderr.splitlines() if line.startswith("CPU after the import: ")]
    after_import = float(reported[-1].rsplit(" ", 1)[1]) if reported else 0.0
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall, after_import


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the commands (0: torch's default)")
    parser.add_argument("--baseline", default=None, help="a checkout whose gon_lightning to compare with")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="gon-commands-")
    runs, cli = f"{work}/runs", [sys.executable, "-c", AFTER_IMPORT]
    fit = [*cli, "fit", "--config", QUICKSTART, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    fit += ["--runs_root", runs]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    versions = {"": env}
    if args.baseline:
        versions["baseline "] = {**env, "PYTHONPATH": str(Path(args.baseline).resolve())}
    timed(fit, work, env)  # a checkpoint to test, and the data cache every later command finds
    (checkpoint,) = Path(runs).glob("*/checkpoints/last.ckpt")
    commands = {
        "python -c 'import gon_lightning.cli'": [sys.executable, "-c", "import gon_lightning.cli"],
        "fit, 1 step": fit,
        "test last.ckpt": [*cli, "test", "--config", QUICKSTART, "--ckpt_path", str(checkpoint), "--runs_root", runs],
    }
    seconds: dict[str, list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        for name, command in commands.items():
            for version, version_env in versions.items():
                seconds.setdefault(version + name, []).append(timed(command, work, version_env))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1][0]:.1f} s" for n, v in seconds.items()))
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, OMP_NUM_THREADS {args.threads or 'unset'}")
    for name, values in seconds.items():
        version = "baseline " if name.startswith("baseline ") else ""
        base = statistics.median(cpu for cpu, _, _ in seconds[version + "python -c 'import gon_lightning.cli'"])
        cpu, wall = statistics.median(c for c, _, _ in values), statistics.median(w for _, w, _ in values)
        inside = statistics.median(a for _, _, a in values)
        print(
            f"  {name:<50} CPU {cpu:6.2f} s (beyond the import {cpu - base:+.2f} s; in the process {inside:+.2f} s), "
            f"wall {wall:6.2f} s"
        )


if __name__ == "__main__":
    main()
