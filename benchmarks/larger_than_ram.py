"""Images/s served from the mapped cache when it does not fit in the memory allowed to the process, against when
it does.

The decoded cache (`synthetic.SyntheticImages`, `--size-mb` of random colour images at `--image-size` px) is
served exactly as training serves it (the mapped split, the epoch sampler, one gather per batch), converted to
float as the training step does, in a fresh process per contender:

    warm            no limit, the file already in the page cache: what every epoch after the first costs when
                    the dataset fits in memory
    cold            no limit, the file dropped from the page cache first: the first epoch
    cold-random     the same with `madvise(MADV_RANDOM)` on the mapping (below)
    limited         the process in a memory cgroup (cgroup v1 `memory.limit_in_bytes`, or v2 `memory.max`)
                    allowing `--page-cache-mb` beyond what the process itself holds when it starts serving: the
                    page cache of the file is charged to the cgroup, so most batches fault their pages in from
                    disk, every epoch (the file is dropped from the page cache first)
    limited-random  the same with `madvise(MADV_RANDOM)` on the mapping: a fault reads its own page, not the
                    kernel's read-around window (128 KiB by default) of which a random batch uses one image
                    (what `cache.read_cache` does when the decoded images exceed the memory available)

Contenders run in turn for `--rounds` rounds of `--batches` batches each; the figure is the median. Needs root for
the cgroup (it creates a child of this process's memory cgroup and removes it afterwards). Run from the
repository root:

    python benchmarks/larger_than_ram.py --root /tmp/gon-ltr --size-mb 2000 --page-cache-mb 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
CONTENDERS = ("warm", "cold", "cold-random", "limited", "limited-random")


def memory_cgroup() -> Path:
    """This process's memory cgroup directory (v1 memory controller, else the v2 unified hierarchy)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/")
    raise RuntimeError("no memory cgroup found")


def set_limit(group: Path, limit: int) -> None:
    v1 = group / "memory.limit_in_bytes"
    (v1 if v1.exists() else group / "memory.max").write_text(str(limit))


def usage(group: Path) -> int:
    v1 = group / "memory.usage_in_bytes"
    return int((v1 if v1.exists() else group / "memory.current").read_text())


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def serve(args: argparse.Namespace) -> None:
    """The child: join the cgroup, map the split, time `--batches` batches."""
    import torch
    from torch.utils.data import DataLoader

    from gon_lightning.data.base import InMemoryImages, keep_batch
    from gon_lightning.data.cache import map_npy
    from gon_lightning.data.sampler import EpochSampler

    torch.set_num_threads(1)
    if args.cgroup:
        group = Path(args.cgroup)
        (group / "cgroup.procs").write_text(str(os.getpid()))
        set_limit(group, usage(group) + args.page_cache_mb * 2**20)  # what this process holds, plus the cache
    images = torch.from_numpy(map_npy(Path(args.split), random_access=args.advice == "random"))
    loader = DataLoader(
        InMemoryImages(images), batch_size=args.batch_size, sampler=EpochSampler(len(images)), collate_fn=keep_batch
    )
    batches = iter(loader)
    checksum = 0.0
    start = time.perf_counter()
    for _ in range(args.batches):
        checksum += float(next(batches).float().div_(255).mean())  # what the step does with it: to float
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_s": args.batches * args.batch_size / seconds, "checksum": checksum}))


def run_contender(args: argparse.Namespace, contender: str, split: Path, group: Path | None) -> float:
    if contender != "warm":
        drop_from_page_cache(split)
    command = [
        sys.executable,
        __file__,
        "--serve",
        f"--split={split}",
        f"--batches={args.batches}",
        f"--batch-size={args.batch_size}",
        f"--page-cache-mb={args.page_cache_mb}",
        f"--advice={'random' if contender.endswith('-random') else 'normal'}",
    ]
    if contender.startswith("limited"):
        command.append(f"--cgroup={group}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="where the decoded dataset is cached")
    parser.add_argument("--size-mb", type=int, default=2000, help="decoded training split, MB")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--page-cache-mb", type=int, default=256, help="page cache the limited contenders may hold")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--timeout", type=float, default=600)
    # the child's options
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    parser.add_argument("--cgroup", help=argparse.SUPPRESS)
    parser.add_argument("--advice", default="normal", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    sys.path.insert(0, str(BENCHMARKS))
    from synthetic import SyntheticImages

    data = SyntheticImages(root=args.root, size_mb=args.size_mb, image_size=args.image_size)
    data.prepare_data()
    split = data.cache_path / "train.npy"
    print(
        f"decoded training split: {split.stat().st_size / 1e9:.2f} GB ({split}); page cache allowed when limited: "
        f"{args.page_cache_mb} MB"
    )
    group = None
    if any(c.startswith("limited") for c in args.contenders):
        group = memory_cgroup() / f"gon-larger-than-ram-{os.getpid()}"
        group.mkdir()
    try:
        figures: dict[str, list[float]] = {c: [] for c in args.contenders}
        for round_ in range(args.rounds):
            if "warm" in args.contenders:
                with split.open("rb") as f:  # into the page cache
                    while f.read(2**26):
                        pass
            for contender in args.contenders:
                figures[contender].append(run_contender(args, contender, split, group))
            print(f"round {round_}: " + ", ".join(f"{c} {v[-1]:.0f}" for c, v in figures.items()), flush=True)
    finally:
        if group is not None:
            group.rmdir()
    medians = {c: statistics.median(v) for c, v in figures.items()}
    print("images/s, median over rounds: " + ", ".join(f"{c} {v:.0f}" for c, v in medians.items()))
    if "warm" in medians:
        print("relative to warm: " + ", ".join(f"{c} {v / medians['warm']:.3f}" for c, v in medians.items()))


if __name__ == "__main__":
    main()
