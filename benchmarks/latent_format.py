"""Which on-disk format an encoded folder uses: safetensors shards against Parquet (pyarrow), side by side.

Writes and reads N x nz float32 latents (plus int64 labels and float32 SSE per row) in shards of `--shard` rows,
in each format, and prints the seconds and bytes of each. docs/latents.md records a run.

    OMP_NUM_THREADS=1 python benchmarks/latent_format.py --rows 60000 --nz 256
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def safetensors_io(folder: Path, z: np.ndarray, y: np.ndarray, sse: np.ndarray, shard: int) -> tuple[float, float]:
    from safetensors.numpy import load_file, save_file

    start = time.perf_counter()
    for i, at in enumerate(range(0, len(z), shard)):
        part = slice(at, at + shard)
        save_file({"latents": z[part], "labels": y[part], "sse": sse[part]}, str(folder / f"train-{i:05d}.safetensors"))
    written = time.perf_counter() - start
    start = time.perf_counter()
    parts = [load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))]
    out = np.concatenate([p["latents"] for p in parts])
    read = time.perf_counter() - start
    assert np.array_equal(out, z)
    return written, read


def parquet_io(folder: Path, z: np.ndarray, y: np.ndarray, sse: np.ndarray, shard: int) -> tuple[float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for i, at in enumerate(range(0, len(z), shard)):
        part = slice(at, at + shard)
        # one fixed-size list column: what Hugging Face `datasets` reads as Sequence(float32, length=nz)
        latents = pa.FixedSizeListArray.from_arrays(pa.array(z[part].reshape(-1)), z.shape[1])
        table = pa.table({"latents": latents, "label": y[part], "sse": sse[part]})
        pq.write_table(table, folder / f"train-{i:05d}.parquet", compression="none")
    written = time.perf_counter() - start
    start = time.perf_counter()
    table = pq.read_table(folder)
    column = table.column("latents").combine_chunks()
    out = column.values.to_numpy().reshape(-1, z.shape[1])
    read = time.perf_counter() - start
    assert np.array_equal(out, z)
    return written, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--nz", type=int, default=256)
    parser.add_argument("--shard", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((args.rows, args.nz), dtype=np.float32)
    y = rng.integers(0, 10, args.rows).astype(np.int64)
    sse = rng.random(args.rows, dtype=np.float32)
    raw = z.nbytes + y.nbytes + sse.nbytes
    print(f"{args.rows} x {args.nz} float32 latents + labels + sse ({raw / 1e6:.1f} MB raw), shards of {args.shard}")
    for name, io in (("safetensors", safetensors_io), ("parquet", parquet_io)):
        best_w = best_r = float("inf")
        size = 0
        for _ in range(args.repeats):
            folder = Path(tempfile.mkdtemp())
            try:
                w, r = io(folder, z, y, sse, args.shard)
                best_w, best_r, size = min(best_w, w), min(best_r, r), folder_bytes(folder)
            finally:
                shutil.rmtree(folder)
        print(
            f"{name:<12} write {best_w:.3f} s ({raw / best_w / 1e6:.0f} MB/s)  read {best_r:.3f} s "
            f"({raw / best_r / 1e6:.0f} MB/s)  size {size / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
