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

`--mnist-root DIR` (a folder holding MNIST/raw/, torchvision's layout) measures instead what a user's run holds:
the paper's GON (nz 4, ngf 1: the model costs next to nothing) trains one full epoch of real MNIST, CSV logger,
validation off, image panels on, as `one` and `two` at `--mnist-sizes` (default 32 and 128 px: 72 MB and 1.15 GB
decoded). The data's share of each run is its peak summed PSS less the same run's at the smallest size (the
interpreters cancel); `--max-ratio R` fails the benchmark when the two ranks' share exceeds R times one process's
(1.15: the dataset once per node, plus what each rank's batches cost):

    python benchmarks/memory.py --root /tmp/gon-memory --mnist-root /tmp/mnistroot --max-ratio 1.15
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def one_epoch_on_cpu(ranks: int) -> list[str]:
    """What both measured runs share: one training epoch on `ranks` CPU processes, no validation."""
    return [
        "--trainer.accelerator=cpu",
        f"--trainer.devices={ranks}",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
    ]


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
        *one_epoch_on_cpu(ranks),
        "--trainer.logger=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_progress_bar=false",
        "--images.every_n_epochs=0",
        f"--runs_root={args.root / 'runs'}",
    ]
    if ranks > 1:
        command.append("--trainer.strategy=" + ("ddp_fork" if contender == "two-fork" else "ddp"))
    return command


def mnist_command(args: argparse.Namespace, contender: str, size: int) -> list[str]:
    """The issue-38 run: the paper's GON, as small as it goes, one epoch of full MNIST at `size` px."""
    ranks = 1 if contender == "one" else 2
    command = [
        sys.executable,
        "-m",
        "gon_lightning",
        "fit",
        "--config=gon_mnist",
        f"--data.root={args.mnist_root}",
        f"--data.image_size={size}",
        "--data.download=false",
        "--model.nz=4",
        "--model.ngf=1",
        *one_epoch_on_cpu(ranks),
        "--trainer.logger=CSVLogger",
        "--trainer.enable_progress_bar=false",
        f"--runs_root={args.root / 'runs'}",
    ]
    if ranks > 1:
        command.append("--trainer.strategy=ddp")
    return command


def measure(args: argparse.Namespace, contender: str, cache: Path, size: int | None = None) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCHMARKS)]),
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    start = time.monotonic()
    command = fit_command(args, contender) if size is None else mnist_command(args, contender, size)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak: dict[str, Any] = {"Pss": 0, "Rss": 0, "processes": 0, "data": 0, "anon": []}
    try:
        while process.poll() is None:
            if time.monotonic() - start > args.timeout:
                raise TimeoutError(f"{contender} ran past --timeout {args.timeout} s")
            pids = process_tree(process.pid)
            rollups = [r for r in map(smaps_rollup, pids) if r]
            pss, rss = sum(r.get("Pss", 0) for r in rollups), sum(r.get("Rss", 0) for r in rollups)
            if pss > peak["Pss"]:
                data = sum(mapped_pss(pid, str(cache)) for pid in pids)
                anon = [r.get("Pss_Anon", 0) for r in rollups]
                peak = {"Pss": pss, "Rss": rss, "processes": len(rollups), "data": data, "anon": anon}
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
    parser.add_argument("--mnist-root", type=Path, help="measure GON on real MNIST instead (see above)")
    parser.add_argument("--mnist-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--max-ratio", type=float, help="fail when two ranks' data share exceeds R x one's")
    args = parser.parse_args()
    if args.mnist_root is not None:
        mnist(args)
        return

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


def mnist(args: argparse.Namespace) -> None:
    from gon_lightning.data import MNISTDataModule

    sizes = sorted(args.mnist_sizes)
    caches = {}
    for size in sizes:  # decoded once, outside the measured processes
        data = MNISTDataModule(root=args.mnist_root, image_size=size, download=False)
        data.prepare_data()
        caches[size] = data.cache_path
        decoded = sum(p.stat().st_size for p in data.cache_path.glob("*.npy"))
        print(f"MNIST at {size} px: {decoded / 1e9:.3f} GB decoded in {data.cache_path}", flush=True)
    peaks: dict[tuple[str, int], dict[str, float]] = {}
    for size in sizes:
        for contender in ("one", "two"):
            peaks[contender, size] = r = measure(args, contender, caches[size], size)
            anon = ", ".join(f"{a / 1e9:.2f}" for a in r["anon"])
            print(
                f"{contender:4s} {size:4d} px: peak summed PSS {r['Pss'] / 1e9:.3f} GB, of which the mapped dataset "
                f"{r['data'] / 1e9:.3f} GB; anonymous memory per process {anon} GB; {r['seconds']:.0f} s",
                flush=True,
            )
    failed = []
    for size in sizes[1:]:
        share = {c: peaks[c, size]["Pss"] - peaks[c, sizes[0]]["Pss"] for c in ("one", "two")}
        ratio = share["two"] / share["one"]
        print(
            f"data's share at {size} px (less the {sizes[0]} px run): one {share['one'] / 1e9:.3f} GB, two ranks "
            f"{share['two'] / 1e9:.3f} GB: {ratio:.2f}x one process's"
        )
        if args.max_ratio is not None and ratio > args.max_ratio:
            failed.append(f"{size} px: {ratio:.2f}x > --max-ratio {args.max_ratio}")
    if failed:
        sys.exit("two ranks hold more than the dataset once per node: " + "; ".join(failed))


if __name__ == "__main__":
    main()
