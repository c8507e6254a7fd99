"""The data benchmarks run, and measure what they say: the PSS of a mapped file, images served under a limit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mapped_pss_is_this_process_share_of_the_mapped_file(tmp_path):
    memory = load("memory")
    path = tmp_path / "data" / "train.npy"
    path.parent.mkdir()
    np.save(path, np.ones(8 * 2**20, dtype=np.uint8))
    mapped = np.load(path, mmap_mode="r")
    assert int(mapped.sum()) == 8 * 2**20  # every page touched
    pss = memory.mapped_pss(os.getpid(), str(path.parent))
    assert 8 * 2**20 <= pss <= 8 * 2**20 + 2**16  # the whole file (and its header page), mapped by us alone
    assert memory.smaps_rollup(os.getpid())["Pss"] >= pss
    assert os.getpid() in memory.process_tree(os.getpid())


def test_larger_than_ram_serves_and_reports(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "benchmarks/larger_than_ram.py", f"--root={tmp_path}", "--size-mb=2", "--batches=3"]
    command += ["--rounds=1", "--contenders", "warm", "cold-random"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "relative to warm: warm 1.000, cold-random" in proc.stdout
