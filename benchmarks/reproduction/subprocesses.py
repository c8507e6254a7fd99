"""Running gon-lightning's commands in subprocesses, each with its log, as a user would."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def subprocess_env(args: argparse.Namespace) -> dict[str, str]:
    # each run one torch thread: --jobs runs side by side on a small machine without oversubscribing it
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads)}


def gon_lightning(arguments: list[str], log: Path, args: argparse.Namespace, append: bool = False) -> bool:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a" if append else "w") as out:
        out.write("$ gon-lightning " + " ".join(arguments) + "\n")
        out.flush()
        command = [sys.executable, "-m", "gon_lightning", *arguments]
        done = subprocess.run(command, stdout=out, stderr=out, env=subprocess_env(args))
    return done.returncode == 0


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"
