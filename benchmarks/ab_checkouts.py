"""A/B of two checkouts of the repository on `benchmarks/throughput.py`, interleaved: A, B, A, B, ...

Each run is a fresh process of each checkout's own throughput.py with the same options (`--no-fit` added), so
load on a shared machine hits both alike; the figure per contender is the median over the runs of each side, and
the ratio B/A per contender is also given as the median of the per-pair ratios. Contender (a), the published
pipeline, does not touch our code: its ratio is the measurement's own noise. Example (the data path before the
mapped cache against this checkout):

    git archive 90acb1a | tar -x -C /tmp/old
    python benchmarks/ab_checkouts.py /tmp/old . --pairs 3 -- --rounds 3 --steps 100 --warmup 10 \\
        --threads 1 --clock cpu --nz 4 --ngf 1
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LINE = re.compile(r"^\s+\((\w)\) (.*?)\s+([\d.]+) images/s$")


def run(tree: Path, options: list[str], root: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "benchmarks/throughput.py", "--no-fit", f"--root={root}", *options]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {proc.stderr[-3000:]}")
    figures = {}
    for line in proc.stdout.splitlines():
        match = LINE.match(line)
        if match:
            figures[match[1] if match[1] != "c" else f"c {match[2].split()[0]}"] = float(match[3])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--pairs", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # after "--": throughput.py's options
    args, options = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    data = Path(tempfile.mkdtemp(prefix="gon-ab-"))
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for side, tree in (("A", args.a), ("B", args.b)):
            results[side].append(run(tree.resolve(), options, data / side))  # each side its own cache format
            print(f"pair {pair + 1} {side}: " + ", ".join(f"{k} {v:.0f}" for k, v in results[side][-1].items()))
    print("\nimages/s, median over pairs; B/A (median of the per-pair ratios):")
    for name in results["A"][0]:
        a = [r[name] for r in results["A"]]
        b = [r[name] for r in results["B"]]
        per_pair = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"  {name:6s} A {statistics.median(a):8.1f}  B {statistics.median(b):8.1f}  B/A {per_pair:.3f}")


if __name__ == "__main__":
    main()
