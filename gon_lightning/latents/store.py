"""The on-disk format of an encoded folder: one encoding of one checkpoint on one dataset.

    <folder>/latents.json               the card (`read_card`): what was encoded, with what, and the split sizes
    <folder>/data/<split>-00000.parquet one shard per `shard_batches` batches, in the split's order:
                                        `latents` (fixed-size list of nz float32), `sse` (float32),
                                        `labels` (int64, where the dataset has labels)

Parquet, because the ecosystem reads it without gon-lightning (Hugging Face `datasets`: `load_dataset("parquet",
data_files={"train": "<folder>/data/train-*.parquet"})`; pandas, polars, DuckDB) and because writing and reading it
costs nothing beside encoding (docs/latents.md, "Format": measured against safetensors shards). Shards are named by
their place in the split, whoever wrote them, so a folder encoded by several processes is the same folder.

A folder is written aside (`.<name>.encoding` beside it) and renamed into place whole: a folder with a card is
complete, and an interrupted encoding leaves nothing under the folder's name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gon_lightning.errors import UserError

FORMAT_VERSION = 1
CARD = "latents.json"
#: written into a checkpoint's run folder by an encoding with probes: what `export`'s model card reports
PROBE_RECORD = "latent_probes.json"
DATA = "data"
COLUMNS = ("latents", "sse", "labels")


def _parquet() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:  # a core dependency: only a broken install lacks it
        raise UserError("encoded latents are Parquet files: pip install pyarrow") from error
    return pa, pq


def shard_name(split: str, index: int) -> str:
    return f"{DATA}/{split}-{index:05d}.parquet"


def staging_folder(out: Path) -> Path:
    """Where `out` is written before it is renamed into place: a fixed name, so every DDP process finds it."""
    return out.parent / f".{out.name}.encoding"


def write_shard(folder: Path, split: str, index: int, latents: Tensor, sse: Tensor, labels: Tensor | None) -> Path:
    """Write one shard of `split` (rows in the split's order) into the staging `folder`."""
    pa, pq = _parquet()
    z = latents.detach().to("cpu", torch.float32).contiguous().numpy()
    columns = {
        "latents": pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), z.shape[1]),
        "sse": pa.array(sse.detach().to("cpu", torch.float32).numpy()),
    }
    if labels is not None:
        columns["labels"] = pa.array(labels.detach().to("cpu", torch.int64).numpy())
    path = folder / shard_name(split, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    pq.write_table(pa.table(columns), part, compression="none")  # floats barely compress; plain reads fastest
    os.replace(part, path)
    return path


def commit(staging: Path, out: Path, card: dict[str, Any]) -> None:
    """Write the card into `staging` and rename it to `out` (an earlier encoded folder there is replaced)."""
    (staging / CARD).write_text(json.dumps(card, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of an encoded folder (`latents.json`); a folder without one is a UserError naming it."""
    path = Path(folder).expanduser() / CARD
    if not path.is_file():
        raise UserError(
            f"{Path(folder)} is not an encoded latents folder (no {CARD}): write one with gon-lightning encode"
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({type(error).__name__}: {error})") from error
    version = card.get("format") if isinstance(card, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path} has latents format {version!r}; this gon-lightning reads format {FORMAT_VERSION}")
    return card


def read_split(folder: str | Path, split: str) -> dict[str, Tensor]:
    """One split of an encoded folder: {"latents": (N, nz) float32, "sse": (N,) float32, "labels": (N,) int64 where
    the dataset has labels}. A split the folder lacks, or a shard that does not decode, is a UserError."""
    folder = Path(folder).expanduser()
    card = read_card(folder)
    sizes = card.get("splits", {})
    if split not in sizes:
        raise UserError(f"{folder} holds no {split!r} split (it holds {', '.join(sizes) or 'none'})")
    out = read_shards(folder, split, int(card["model"]["nz"]))
    if len(out["latents"]) != sizes[split]:
        raise UserError(
            f"{folder}: split {split!r} has {len(out['latents'])} rows, its card says {sizes[split]}; encode it again"
        )
    return out


def read_shards(folder: Path, split: str, nz: int) -> dict[str, Tensor]:
    """The columns of every shard of `split` under `folder`, concatenated in order (`read_split`, unchecked)."""
    _, pq = _parquet()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    for path in sorted((folder / DATA).glob(f"{split}-*.parquet")):
        try:
            table = pq.read_table(path)
            parts["latents"].append(table.column("latents").combine_chunks().flatten().to_numpy().reshape(-1, nz))
            parts["sse"].append(table.column("sse").to_numpy())
            if "labels" in table.column_names:
                parts["labels"].append(table.column("labels").to_numpy())
        except Exception as error:
            raise UserError(
                f"{path} does not decode as a latents shard ({type(error).__name__}: {error}); encode the folder again"
            ) from error
    out = {name: torch.from_numpy(np.concatenate(arrays)) for name, arrays in parts.items() if arrays}
    if "latents" not in out:
        out["latents"] = torch.zeros(0, nz)
        out["sse"] = torch.zeros(0)
    return out
