"""Memory of one training process against two DDP ranks on the same decoded dataset: summed PSS.

Each process's resident set (RSS) counts every page it maps, also the page-cache pages of the mapped dataset that
the other rank maps too, so two ranks sharing one copy would still add up to two copies. The proportional set
size (PSS, `/proc/PID/smaps_rollup`) charges a page shared by k processes 1/k to each: summed over the ranks it is
the memory the job really holds. This runs `gon-lightning fit` for one epoch of a model that only reads its batches
(`synthetic.TouchEveryImage`: the fit costs what the data costs) on `--size-mb` of
random 32x32 colour images (`synthetic.SyntheticImages`, decoded once beforehand), samples the PSS and RSS of
the whole process tree every `--interval` seconds, and reports the peaks, for:

    one        one process, global batch B
    two        DDP, two CPU ranks (gloo), B/2 each: the same global batch
    two-copy   the same, each rank copying the dataset into its own memory (the control: the layout before
               the mapped cache, which this measurement must show as two copies)
    two-fork   two ranks started by Lightning's `ddp_fork` (CPU, or GPUs before CUDA is initialised): rank 1 is
               a fork of rank 0 and shares its interpreter, torch and Lightning pages too, not only the data

Run from the repository root (about a minute per contender at 1 GB on 2 cores):

    python benchmarks/memory.py --root /tmp/gon-memory
    python benchmarks/memory.py --root /tmp/gon-memory --contenders one two two-copy --size-mb 1000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent


def smaps_rollup(pid: int) -> dict[str, int]:
    """{"Rss": bytes, "Pss": bytes, ...} of one process (0s once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    values = {}
    for line in text.splitlines()[1:]:
        name, value, *_ = line.split()
        values[name.rstrip(":")] = int(value) * 1024
    return values


def mapped_pss(pid: int, folder: str) -> int:
    """PSS (bytes) of this process's mappings of files under `folder`: its share of the mapped dataset."""
    total, counting = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if not line[0].isupper():  # a mapping's header: address range, permissions, ..., path
                    counting = folder in line
                elif counting and line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return total


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return pids


def fit_command(args: argparse.Namespace, contender: str) -> list[str]:
    ranks = 1 if contender == "one" else 2
    command = [
        sys.executable,
        "-m",
        "gon_lightning",
        "fit",
        "--model=synthetic.TouchEveryImage",
        "--data=synthetic.SyntheticImages",
        f"--data.init_args.root={args.root}",
        f"--data.init_args.size_mb={args.size_mb}",
        f"--data.init_args.batch_size={args.batch_size // ranks}",
        f"--data.init_args.private_copy={contender == 'two-copy'}",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={ranks}",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_progress_bar=false",
        "--images.every_n_epochs=0",
        f"--runs_root={args.root / 'runs'}",
    ]
    if ranks > 1:
        command.append("--trainer.strategy=" + ("ddp_fork" if contender == "two-fork" else "ddp"))
    return command


def measure(args: argparse.Namespace, contender: str, cache: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCHMARKS)]),
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    start = time.monotonic()
    process = subprocess.Popen(fit_command(args, contender), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"Pss": 0, "Rss": 0, "processes": 0, "data": 0}
    try:
        while process.poll() is None:
            if time.monotonic() - start > args.timeout:
                raise TimeoutError(f"{contender} ran past --timeout {args.timeout} s")
            pids = process_tree(process.pid)
            rollups = [r for r in map(smaps_rollup, pids) if r]
            pss, rss = sum(r.get("Pss", 0) for r in rollups), sum(r.get("Rss", 0) for r in rollups)
            if pss > peak["Pss"]:
                data = sum(mapped_pss(pid, str(cache)) for pid in pids)
                peak = {"Pss": pss, "Rss": rss, "processes": len(rollups), "data": data}
            time.sleep(args.interval)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{output[-3000:]}")
    return {**peak, "seconds": time.monotonic() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="where the decoded dataset is cached")
    parser.add_argument("--size-mb", type=int, default=1000, help="decoded training split, MB")
    parser.add_argument("--batch-size", type=int, default=1024, help="global batch (split over the ranks)")
    parser.add_argument("--contenders", nargs="+", default=["one", "two", "two-copy"])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between PSS samples")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one contender may run")
    args = parser.parse_args()

    sys.path.insert(0, str(BENCHMARKS))
    from synthetic import SyntheticImages

    data = SyntheticImages(root=args.root, size_mb=args.size_mb)
    data.prepare_data()  # decoded once, outside the measured processes
    size = sum(p.stat().st_size for p in data.cache_path.glob("*.npy"))
    print(f"decoded dataset: {size / 1e9:.2f} GB in {data.cache_path}")
    results = {}
    for contender in args.contenders:
        results[contender] = measure(args, contender, data.cache_path)
        r = results[contender]
        print(
            f"{contender:9s} peak summed PSS {r['Pss'] / 1e9:.2f} GB, of which the mapped dataset "
            f"{r['data'] / 1e9:.2f} GB (RSS summed at that moment {r['Rss'] / 1e9:.2f} GB, {r['processes']} "
            f"processes), {r['seconds']:.0f} s",
            flush=True,
        )
    if "one" in results:
        for contender, r in results.items():
            if contender != "one":
                print(f"{contender} / one: PSS {r['Pss'] / results['one']['Pss']:.2f}x")


if __name__ == "__main__":
    main()
