"""`gon-lightning evaluate`: how good a model's samples (or a folder of images) are, against the training split.

The protocol (docs/sample_quality.md): N images, from the checkpoint's model (`--ckpt_path`, drawn in batches of the
DataModule's batch size under a generator seeded with `--seed_everything`) or from a folder (`--image_folder`, decoded
as ImageFolderDataModule decodes, to the dataset's size and channels), quantised to 8 bits as an image file holds them,
are compared on one extractor's features with the training split: the Fréchet and kernel distances against the
whole split, precision, recall, density and coverage against a seeded subset of it as large as the set scored. The
test split, scored the same way, is printed beside them: the floor a model that drew real unseen images would reach.
Everything goes to `sample_quality.json` (format below); the same inputs, extractor and seed give the same numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gon_lightning import runs
from gon_lightning.data.decode import Geometry, decode_error, list_images
from gon_lightning.errors import UserError, positive_int
from gon_lightning.metrics import (
    NEAREST_K,
    extract,
    load_extractor,
    reference_features,
    score_samples,
    seeded_subset,
)
from gon_lightning.metrics.copying import latent_copying_figures
from gon_lightning.metrics.reference import save_array
from gon_lightning.models import ImageModel
from gon_lightning.models.base import check_sampler_option

RESULT_FILE = "sample_quality.json"
RESULT_FORMAT = 1
DEFAULT_SAMPLES = 10_000
REFERENCE_SPLIT, FLOOR_SPLIT = "train", "test"
#: the table notes a precision whose density is below this share of it (noise on MNIST: 0.52 and 0.13; real held-out
#: digits: 0.98 and 1.0)
DENSITY_BACKS_PRECISION = 0.5
#: the table notes a data-copying z-score below this (Meehan et al.'s C_T is about N(0, 1) for fresh draws)
COPYING_Z_ALARM = -3.0


def quantised(images: Tensor) -> Tensor:
    """Images in [0, 1] rounded to the 256 levels an 8-bit image file holds: samples score as their saved PNGs."""
    return images.detach().float().clamp(0, 1).mul(255).round().div(255)


def check_sampler(model: Any, sampler: str | None, option: str = "--sampler") -> None:
    """Refuse a model that cannot sample, or a `sampler` (given as `option`) the model does not offer."""
    if type(model).sample is ImageModel.sample:
        raise UserError(f"{type(model).__name__} cannot sample, so its samples cannot be scored")
    check_sampler_option(option, model, sampler)


def draw_samples(
    model: Any, n: int, batch_size: int, sampler: str | None, seed: int, latents: list[Tensor] | None = None
) -> Iterator[Tensor]:
    """Yield n samples of `model` in batches of `batch_size`, from a generator seeded with `seed` (the global RNG is
    restored afterwards). A model that cannot sample yet raises NotImplementedError (the generation interface's).
    The callers check `model` and `sampler` first (`check_sampler`), before their work starts. `latents` (a model
    with latents): a list that receives, on the CPU, the latents each batch was decoded from (the same draws)."""
    if latents is None:
        options = {"sampler": sampler} if sampler is not None else {}
        return seeded_batches(model, n, batch_size, seed, lambda count: model.sample(count, **options))
    name = model.checked_sampler(sampler)

    def draw(count: int) -> Tensor:  # LatentModel.sample, keeping what it decodes
        z = model.sample_latents(count, name)
        latents.append(z.cpu())
        return model.decode_samples(z)

    return seeded_batches(model, n, batch_size, seed, draw)


def seeded_batches(model: Any, n: int, batch_size: int, seed: int, draw: Any) -> Iterator[Tensor]:
    """draw(count) for n rows in batches of `batch_size`, without gradients, under a generator seeded with `seed`."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            with torch.no_grad():
                yield draw(min(batch_size, n - start))


def prior_copying(prior: Any, ckpt_path: str, samples: Tensor, seed: int) -> dict[str, float]:
    """The copying figures in a learned prior's latent space: the latents the samples were decoded from against the
    model checkpoint's training and test latents (`LatentDataModule`: its run's latents/ cache, encoded now when
    missing). A prior that memorised its training latents shows here first: the decoder and the 8-bit images blur
    what the features see."""
    from gon_lightning.data.latents import LatentDataModule

    data = LatentDataModule(ckpt_path=prior.source.get("checkpoint") or ckpt_path)  # post hoc: the model's file
    data.prepare_data()
    data.setup("fit")
    return latent_copying_figures(data.latents("train"), samples, data.latents("test"), seed)


def folder_images(folder: str | Path, image_size: int, channels: int, limit: int | None) -> Tensor:
    """The images under `folder` (every image file, recursively, sorted; the first `limit`), decoded as
    ImageFolderDataModule decodes them: centre square, antialiased resize to image_size, `channels` channels."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"--image_folder {root} is not a folder of images")
    names = list_images(root)
    if not names:
        raise UserError(f"--image_folder {root} holds no image files (PNG, JPEG, WebP, BMP, TIFF, GIF)")
    names = names[:limit] if limit is not None else names
    geometry = Geometry(image_size, channels, "center")
    out = torch.empty(len(names), channels, image_size, image_size, dtype=torch.uint8)
    for i, name in enumerate(names):
        array, error = decode_error(root / name, geometry)
        if error is not None:
            raise UserError(f"--image_folder: {root / name} does not decode ({error}); remove it or replace it")
        out[i].numpy()[...] = array
    return out


def evaluate(
    trainer: Any,
    model: Any,
    datamodule: Any,
    ckpt_path: str | None = None,
    image_folder: str | None = None,
    num_samples: int | None = None,
    extractor: str | None = None,
    extractor_weights: str | None = None,
    sampler: str | None = None,
    nearest_k: int = NEAREST_K,
    save_features: bool = False,
    out: str | None = None,
    weights_only: bool | None = None,
    loaded: bool = False,
) -> dict[str, Any]:
    """Score samples of the checkpoint's model, or a folder of images, against `datamodule`'s training split; write
    `sample_quality.json` (and the features) into `out`, print a table, return the result. See `GONTrainer.evaluate`
    for the options; `loaded`: the model holds the checkpoint's weights already (a prior's checkpoint: the model it
    was trained for, with the prior attached, `gon_lightning.priors.pair`)."""
    if (ckpt_path is None) == (image_folder is None):
        raise UserError("evaluate needs exactly one of --ckpt_path CKPT (a model's samples) and --image_folder DIR")
    if num_samples is not None:
        positive_int("num_samples", num_samples)
    positive_int("nearest_k", nearest_k)
    if weights_only is False:
        raise UserError("--weights_only false: evaluate reads checkpoints as weights only; leave it unset")
    if datamodule is None:
        raise UserError("evaluate needs a DataModule (--data): its training split is the reference")
    if image_folder is not None and sampler is not None:
        raise UserError("--sampler picks how a checkpoint's model draws: a folder's images have none; leave it unset")
    if ckpt_path is not None:
        from gon_lightning.priors.online import PRIORS

        if not loaded and sampler in PRIORS:  # a learned prior the checkpoint may carry (trained online): read it
            runs.load_model_weights(model, ckpt_path)
            loaded = True
        check_sampler(model, sampler)  # before the extractor and the reference features cost their time
    name = extractor or datamodule.extractor
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    device = trainer.strategy.root_device
    features = load_extractor(name, datamodule, extractor_weights, device)
    real = reference_features(datamodule, REFERENCE_SPLIT, features)
    floor_real = reference_features(datamodule, FLOOR_SPLIT, features)
    dataset = type(datamodule).__name__
    prior, prior_latents = None, None  # a learned prior that drew the samples, and the latents it drew
    if image_folder is not None:
        fake_images = folder_images(image_folder, datamodule.image_size, datamodule.channels, num_samples)
        fake = extract(features, fake_images)
        source: dict[str, Any] = {"checkpoint": None, "model": None, "sampler": None, "seed": None}
        source |= {"batch_size": None, "image_folder": str(Path(image_folder).expanduser().resolve())}
    else:
        assert ckpt_path is not None
        if not loaded:
            runs.load_model_weights(model, ckpt_path)
        model.to(device).eval()
        count = num_samples or min(DEFAULT_SAMPLES, len(real))
        if hasattr(model, "prepare_sampler"):  # a sampler fitted to the training latents is fitted now, once
            model.prepare_sampler(sampler, datamodule)
        drawn_by = model.checked_sampler(sampler)  # the sampler's own name, the default's too
        prior = dict(getattr(model, "priors", {}).items()).get(drawn_by)
        prior_latents = [] if prior is not None else None  # for the latent copying figures
        batches = draw_samples(model, count, datamodule.batch_size, sampler, seed, prior_latents)
        try:
            fake = torch.cat([extract(features, quantised(batch)) for batch in batches])
        except NotImplementedError as error:
            raise UserError(f"{type(model).__name__} cannot sample: {error}") from error
        source = {"checkpoint": str(Path(ckpt_path).resolve()), "model": type(model).__name__}
        source |= {"sampler": sampler or "default", "seed": seed, "batch_size": datamodule.batch_size}
        source |= {"drawn_by": drawn_by}
        if prior is not None:  # its options too: the ODE's steps change the figures
            source |= {"prior": prior.spec()}
        source |= {"image_folder": None}
    floor_fake = seeded_subset(floor_real, len(fake), seed)

    # the copying figures compare the samples with the test split: the floor, a part of it, has none
    figures = score_samples(real, fake, features.name, nearest_k, seed, held_out=floor_real)
    if prior is not None and prior_latents:
        figures |= prior_copying(prior, ckpt_path, torch.cat(prior_latents), seed)
    floor = score_samples(real, floor_fake, features.name, nearest_k, seed)
    # a figure that could not be computed (copying_z of too few samples: NaN) is written as null
    figures = {name: value if math.isfinite(value) or math.isinf(value) else None for name, value in figures.items()}
    described = features.describe()
    result = {
        "format": RESULT_FORMAT,
        "figures": list(figures),  # the names of the figures, each a key of its own
        **figures,
        "num_samples": len(fake),
        **source,
        "extractor": described.pop("name"),
        "extractor_sha256": described.pop("sha256"),
        "extractor_info": described,
        "nearest_k": nearest_k,
        "reference": {"dataset": dataset, "split": REFERENCE_SPLIT, "image_size": datamodule.image_size}
        | {"count": len(real)},
        "floor": {"split": FLOOR_SPLIT, "count": len(floor_fake), **floor},
    }
    folder = Path(out).expanduser() if out is not None else Path(trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    if save_features:
        save_array(folder / "real_features.npy", real.numpy())
        save_array(folder / "fake_features.npy", fake.numpy())
    print(table(result, folder / RESULT_FILE), flush=True)
    runs.keep_run()  # the result is written: the run folder stays whatever happens next
    return result


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.4e}"


def table(result: dict[str, Any], path: Path) -> str:
    """The figures of the samples beside the test split's (the floor), and what they were computed on."""
    reference, floor = result["reference"], result["floor"]
    what = result["image_folder"] or f"{result['model']} (sampler {result['sampler']})"
    lines = [
        f"sample quality of {result['num_samples']} images of {what}",
        f"against {reference['dataset']} {reference['split']} ({reference['count']} images, {reference['image_size']} "
        f"px) on {result['extractor']} features (sha256 {result['extractor_sha256'][:12]}), nearest_k "
        f"{result['nearest_k']}",
        f"{'figure':<16}{'samples':>14}{'test split (floor, ' + str(floor['count']) + ')':>30}",
    ]
    lines += [
        f"{name:<16}{_number(result[name]):>14}{_number(floor[name]) if name in floor else '-':>30}"
        for name in result["figures"]
    ]
    lines += notes(result)
    lines.append(f"written to {path}")
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    """Lines that say where one figure misleads without another (docs/sample_quality.md, "Which figure to read")."""
    lines = []
    precision, density = result.get("precision"), result.get("density")
    if precision is not None and density is not None and density < DENSITY_BACKS_PRECISION * precision:
        lines.append(
            f"note: precision {_number(precision)} is not backed by density {_number(density)}: the samples inside "
            "the real images' neighbourhoods sit in few of them (the wide balls of real outliers, as uniform noise "
            "does); read density and coverage for fidelity and diversity"
        )
    copying = {
        "": "the samples lie closer to the training images than the held-out test images do ({figures}): the model "
        "or its prior may be copying its training data",
        "latent_": "the prior's latents lie closer to its training latents than the test images' latents do "
        "({figures}): the prior may be memorising them (dropout, or fewer steps: docs/priors.md)",
    }
    for prefix, message in copying.items():
        copying_z, ratio = result.get(f"{prefix}copying_z"), result.get(f"{prefix}copy_ratio")
        if copying_z is not None and math.isfinite(copying_z) and copying_z < COPYING_Z_ALARM:
            figures = f"{prefix}copying_z {_number(copying_z)}, {prefix}copy_ratio {_number(ratio)}"
            lines.append("note: " + message.format(figures=figures))
    return lines


def load_result(folder: str | Path) -> dict[str, Any]:
    """A run folder's `sample_quality.json` (for model cards and reports)."""
    return json.loads((Path(folder) / RESULT_FILE).read_text())
