"""benchmarks/throughput.py runs end to end (a few steps, no `fit` subprocess) and reports every contender."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_reports_each_contender_and_the_trainers_floor(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--no-fit", "--root", str(tmp_path)]
    command += ["--rounds", "1", "--steps", "2", "--warmup", "1", "--nz", "4", "--ngf", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("(a) plain loop", "(b) plain loop", "(L) plain loop's step as a LightningModule", "(c) GON"):
        assert label in done.stdout
    assert "L/b = " in done.stdout and "c/L = " in done.stdout
    assert "(d)" not in done.stdout  # --no-fit leaves the user's `fit` out


@pytest.mark.slow  # a child process per size, each importing torch and Lightning
def test_implicit_memory_reports_each_size():
    command = [sys.executable, str(ROOT / "benchmarks" / "implicit_memory.py"), "--sizes", "8"]
    command += ["--points", "256", "--batch", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| 8 ")]
    assert row.count("GiB") == 2


@pytest.mark.slow  # three Trainer runs per size
def test_size_throughput_reports_each_size():
    command = [sys.executable, str(ROOT / "benchmarks" / "size_throughput.py"), "--sizes", "32", "64"]
    command += ["--rounds", "1", "--steps", "1", "--warmup", "1", "--nz", "4", "--ngf", "1", "--clock", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| 32 |", "| 64 |"))]
    assert len(rows) == 2 and all(row.count("|") == 7 for row in rows)
