"""The streaming encoder: a model with latents and an image DataModule -> an encoded folder (`store.py`).

Used by `gon-lightning encode` (`GONTrainer.encode`) and by `LatentDataModule`'s cache. What a latent is a function
of, and so what the card records (docs/latents.md, "What a latent depends on"):

- the weights (the checkpoint, fingerprinted by its sha256) and the model's options: inner steps, step size, the
  inner reduction ("mean": each latent is the gradient of the batch's *mean* loss, so it scales with 1/batch size
  and is a function of the whole batch), norm_eval ("batch": BatchNorm normalises with the batch's statistics, so
  every latent depends on the other images of its batch);
- the batch: the split is cut in file order into batches of `batch_size` (the DataModule's, which the model trained
  with, by default). A short last batch is completed with the split's first images, whose latents are dropped, so
  every latent comes from a batch of the same size;
- the seed of any noise (the origin's `init_sigma`, a VAE's sampling is not used): batch k draws from a generator
  seeded with `seed + k`, so the latents do not depend on how many processes encode, nor in which order.

Memory is bounded: one batch is encoded at a time, and every `shard_batches` batches go to disk as one shard.
Under DDP each process encodes every world_size-th shard of each split; rank 0 writes the card and renames the
folder into place.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gon_lightning import __version__
from gon_lightning.errors import UserError, positive_int, writing
from gon_lightning.latents import store
from gon_lightning.models.base import per_image_sse
from gon_lightning.runs.configs import command_line

SHARD_BATCHES = 64  # batches per shard: 16,384 latents at the default batch size of 256


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_latent_model(model: Any) -> None:
    """Refuse a model without a latent space, before any work."""
    from gon_lightning.models.latent import LatentModel

    if not isinstance(model, LatentModel):
        raise UserError(
            f"{type(model).__name__} has no latents to encode: encode takes a model with a latent space (GON, "
            "detached, variational or implicit GON, conv autoencoder, VAE)"
        )


def encoded_splits(datamodule: Any) -> dict[str, Any]:
    """The splits of an image DataModule to encode, by name: train, val where it is a split of its own (a held-out
    part, or a dataset's own validation split; not the test split served again), test."""
    if getattr(datamodule, "stream", None) is not None:
        raise UserError("encode reads the decoded cache: drop data.init_args.stream (the same images are cached)")
    if not hasattr(datamodule, "datasets"):
        raise UserError(
            f"{type(datamodule).__name__} is not an image DataModule of gon-lightning: encode cannot read it"
        )
    if not datamodule.datasets:
        datamodule.prepare_data()
        datamodule.setup("fit")
    sets = datamodule.datasets
    return {
        name: sets[name]
        for name in ("train", "val", "test")
        if name in sets and not (name == "val" and sets["val"] is sets.get("test"))
    }


def split_labels(dataset: Any) -> Tensor | None:
    """A split's labels (int64), or None when it has none (an image folder without class folders: -1)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    labels = dataset.selected_labels().to(torch.int64)
    return labels if len(labels) and bool((labels >= 0).all()) else None


def batch_rows(n: int, batch_size: int, k: int) -> tuple[Tensor, int]:
    """(rows, kept) of batch k of a split of n images: consecutive rows, the last batch completed with the split's
    first rows (cycled if the split is smaller than a batch); the first `kept` rows are the batch's own."""
    start = k * batch_size
    return torch.arange(start, start + batch_size) % n, min(batch_size, n - start)


def dataset_description(datamodule: Any) -> dict[str, Any]:
    """The DataModule's class path and its constructor arguments (those it keeps as attributes of the same name)."""
    from gon_lightning.nn.networks import import_path

    init_args = {}
    for name in list(inspect.signature(type(datamodule).__init__).parameters)[1:]:
        if hasattr(datamodule, name):
            value = getattr(datamodule, name)
            plain = value is None or isinstance(value, (bool, int, float, str, list, tuple))
            init_args[name] = value if plain else str(value)  # JSON: a Path (or anything else) as text
    return {"class_path": import_path(type(datamodule)), "init_args": init_args}


def model_description(model: Any) -> dict[str, Any]:
    from gon_lightning.nn.networks import import_path

    described = {"class_path": import_path(type(model)), "nz": int(model.nz), "norm_eval": model.norm_eval}
    for name in ("inner_steps", "inner_lr", "inner_reduction", "init_sigma", "detach_latent"):
        if hasattr(model, name):
            value = getattr(model, name)
            described[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return described


@torch.no_grad()
def encode_batch(model: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """(latents, per-image SSE of their reconstructions) of a batch in [0, 1], under the model's evaluation
    protocol (the GON family takes its inner gradient inside: `origin_step` enables it)."""
    with model.evaluation_protocol():
        z = model.encode_images(x)
        sse = per_image_sse(model.decode_latents(z), x)
    return z.float(), sse.float()


def _shards(n: int, batch_size: int, shard_batches: int) -> list[tuple[int, int]]:
    """(first batch, batch count) of each shard of a split of n images."""
    batches = -(-n // batch_size)
    return [(first, min(shard_batches, batches - first)) for first in range(0, batches, shard_batches)]


def encode(
    model: Any,
    datamodule: Any,
    out: str | Path,
    *,
    batch_size: int | None = None,
    shard_batches: int = SHARD_BATCHES,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint: str | Path | None = None,
    command: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    probes: bool = True,
    card_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode every split of `datamodule` with `model` (weights loaded) into the folder `out`; return its card (on
    rank 0; {} on the others).

    Args:
        batch_size: images per batch; default the DataModule's (the model's latents depend on it).
        shard_batches: batches per Parquet shard (memory holds one shard's latents, at most).
        seed: seed of batch k's generator is seed + k (noise at the origin; none by default).
        device: where to encode; default the model's.
        checkpoint: the checkpoint file the weights came from, recorded with its sha256.
        command: the command line recorded in the card (default: this process's).
        rank, world_size, barrier: this process's place under DDP, and the strategy's barrier.
        probes: measure the linear and k-NN probes when the dataset has labels (`probes.py`).
        card_extra: more entries for the card.
    """
    check_latent_model(model)
    batch_size = batch_size or datamodule.batch_size
    positive_int("batch_size", batch_size)
    positive_int("shard_batches", shard_batches)
    out = Path(out).expanduser().absolute()
    if out.exists() and not (out / store.CARD).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an encoded latents folder: give a new or empty folder")
    splits = encoded_splits(datamodule)
    device = torch.device(device) if device is not None else model.device
    model.to(device).eval()
    staging = store.staging_folder(out)
    nothing_left = f"nothing is left under {out} (the folder is written aside and renamed into place when whole)"
    sha = sha256_of(checkpoint) if checkpoint is not None and rank == 0 else None
    committed = False
    try:
        with writing("the encoded latents", out.parent, lambda: nothing_left):
            if rank == 0:
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(staging, ignore_errors=True)  # what an interrupted encoding left
                staging.mkdir()
            barrier()
            sizes, labelled = {}, {}
            for name, dataset in splits.items():
                labels = split_labels(dataset)
                sizes[name], labelled[name] = len(dataset), labels is not None
                shards = _shards(len(dataset), batch_size, shard_batches)
                for index in range(rank, len(shards), world_size):
                    first, count = shards[index]
                    z, sse, rows_kept = _encode_shard(model, dataset, batch_size, first, count, seed, device)
                    store.write_shard(staging, name, index, z, sse, labels[rows_kept] if labels is not None else None)
            barrier()
            if rank == 0:
                card = _card(model, datamodule, batch_size, shard_batches, seed, device, checkpoint, sha, command,
                             sizes, labelled)  # fmt: skip
                card.update(card_extra or {})
                if probes and all(labelled.get(s) for s in ("train", "test")):
                    from gon_lightning.latents.probes import run_probes

                    train, test = (store.read_shards(staging, s, model.nz) for s in ("train", "test"))
                    figures = run_probes(train, test)
                    card |= {key: figures.pop(key) for key in ("linear_acc", "knn_acc", "knn_k")}
                    card["probe_settings"] = figures
                store.commit(staging, out, card)
                committed = True
                if "linear_acc" in card and checkpoint is not None:
                    record_probes(Path(checkpoint), card, out)
            barrier()
    finally:
        if rank == 0 and not committed:
            shutil.rmtree(staging, ignore_errors=True)
    return store.read_card(out) if rank == 0 else {}  # the card is rank 0's to write (and the others' to wait for)


def record_probes(checkpoint: Path, card: dict[str, Any], out: Path) -> None:
    """The probes' figures beside the checkpoint's run (`store.PROBE_RECORD`), for the model card `export` writes;
    nothing for a checkpoint outside a run folder."""
    if checkpoint.parent.name != "checkpoints":
        return
    keys = ("linear_acc", "knn_acc", "knn_k", "probe_settings")
    record = {"checkpoint": str(checkpoint.resolve()), "latents": str(out), **{key: card[key] for key in keys}}
    record |= {"splits": card["splits"], "batch_size": card["encoding"]["batch_size"], "dataset": card["dataset"]}
    path = checkpoint.parent.parent / store.PROBE_RECORD
    part = path.with_suffix(".part")
    part.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(part, path)


def _encode_shard(
    model: Any, dataset: Any, batch_size: int, first: int, count: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The latents and SSE of batches first..first+count-1 of a split, and the rows they are of."""
    latents, errors, kept_rows = [], [], []
    n = len(dataset)
    devices = [device] if device.type == "cuda" else []
    for k in range(first, first + count):
        rows, kept = batch_rows(n, batch_size, k)
        x = dataset.__getitems__(rows.tolist()).to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        with torch.random.fork_rng(devices=devices):
            # the generators encoding can draw from; torch.manual_seed would also queue a seed for every lazy
            # device module (CUDA, XPU, MTIA), each recording a traceback: 3 ms a batch on a CPU
            torch.default_generator.manual_seed(seed + k)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed + k)
            z, sse = encode_batch(model, x)
        latents.append(z[:kept].cpu())
        errors.append(sse[:kept].cpu())
        kept_rows.append(rows[:kept])
    return torch.cat(latents), torch.cat(errors), torch.cat(kept_rows)


def _card(
    model: Any,
    datamodule: Any,
    batch_size: int,
    shard_batches: int,
    seed: int,
    device: torch.device,
    checkpoint: str | Path | None,
    sha: str | None,
    command: str | None,
    sizes: dict[str, int],
    labelled: dict[str, bool],
) -> dict[str, Any]:
    return {
        "format": store.FORMAT_VERSION,
        "gon_lightning_version": __version__,
        "checkpoint": {"path": str(Path(checkpoint).absolute()) if checkpoint else None, "sha256": sha},
        "model": model_description(model),
        "encoding": {
            "batch_size": batch_size,
            "batches": "consecutive rows of each split in file order; the last batch completed with the split's "
            "first images, whose latents are dropped",
            "seed": seed,
            "seed_of_batch": "seed + batch index",
            "device": str(device),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "shard_batches": shard_batches,
        },
        "dataset": dataset_description(datamodule),
        "splits": sizes,
        "labels": labelled,
        "command": command if command is not None else command_line(),
    }


# --- a checkpoint and its run ---------------------------------------------------------------------------------
def run_config_of(ckpt_path: Path) -> Path:
    run_config = ckpt_path.parent.parent / "config.yaml"
    if ckpt_path.parent.name != "checkpoints" or not run_config.is_file():
        raise UserError(
            f"checkpoint {ckpt_path} lies outside a run folder (no config.yaml beside its checkpoints/ folder), so its "
            "dataset is unknown: give the folder it was encoded into instead (LatentDataModule's folder)"
        )
    return run_config


def load_run(ckpt_path: str | Path) -> tuple[Any, Any]:
    """The model of a checkpoint (its weights loaded) and its run's DataModule (from the run's config.yaml)."""
    import yaml

    from gon_lightning.nn.networks import import_object
    from gon_lightning.runs import load_checkpoint_file, load_model_weights

    path = Path(ckpt_path).expanduser()
    checkpoint = load_checkpoint_file(path)
    run_config = run_config_of(path)
    config = yaml.safe_load(run_config.read_text()) or {}
    spec = config.get("data") or {}
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise UserError(f"{run_config} names no DataModule (data.class_path)")
    data_class = import_object(spec["class_path"], f"{run_config}: data.class_path")
    datamodule = data_class(**(spec.get("init_args") or {}))
    hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    model_path = (checkpoint.get("gon_lightning") or {}).get("model") or (config.get("model") or {}).get("class_path")
    if not model_path:
        raise UserError(f"checkpoint {path} names no model class")
    model_class = import_object(model_path, f"checkpoint {path}")
    check_latent_model_class(model_class)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's seed alone
        model = model_class(**hparams)
    load_model_weights(model, str(path))
    return model, datamodule


def check_latent_model_class(model_class: type) -> None:
    from gon_lightning.models.latent import LatentModel

    if not issubclass(model_class, LatentModel):
        raise UserError(
            f"{model_class.__name__} has no latents to encode: encode takes a model with a latent space (GON, "
            "detached, variational or implicit GON, conv autoencoder, VAE)"
        )


def encode_checkpoint(ckpt_path: str | Path, out: str | Path, datamodule: Any = None, **options: Any) -> dict[str, Any]:
    """Encode the checkpoint's run's dataset (or `datamodule`) into `out` on this process; `encode`'s options."""
    model, own = load_run(ckpt_path)
    return encode(model, datamodule or own, out, checkpoint=ckpt_path, **options)
