"""`save_pretrained` writes the loadable core of an export, `from_pretrained` builds the model from it and
`load_weights` loads its weights strictly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gon_lightning import __version__
from gon_lightning.errors import UserError
from gon_lightning.export.config import CONFIG, EXPORT_FORMAT, WEIGHTS, class_paths, is_ours, model_config, read_json
from gon_lightning.export.hub import REPO_ID, download
from gon_lightning.nn.networks import import_object, import_path


def save_pretrained(model: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """The loadable core of an export: `model.safetensors` and `config.json` in `folder` (made if missing), which
    `from_pretrained` loads; `gon-lightning export` adds the run's config, images and the model card."""
    from safetensors.torch import save_model

    folder = Path(folder)
    config = model_config(model)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "gon_lightning_model": import_path(type(model))}
    save_model(model, str(folder / WEIGHTS), metadata=metadata)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def from_pretrained(
    source: str | os.PathLike, trust_remote_code: bool = False, map_location: Any = "cpu", revision: str | None = None
) -> Any:
    """Load an exported model: a folder written by `gon-lightning export`, or a Hub repository id (`user/name`).

    The model is built by its own constructor from `config.json`, its `model.safetensors` loaded strictly (every
    parameter and buffer, shapes and dtypes checked), and returned in eval mode on `map_location`, ready to
    `sample`, `reconstruct`, `interpolate` (and `render`, for an implicit GON). The caller's random generators are
    left as they were.

    Args:
        source: an export folder, or a Hugging Face Hub model id (downloaded with huggingface_hub; offline with
            HF_HUB_OFFLINE=1 from its cache).
        trust_remote_code: import the classes `config.json` names outside gon_lightning (your own networks).
            Importing runs their code: only for exports you trust.
        map_location: the device the model is moved to.
        revision: the Hub revision (branch, tag or commit) of a repository id.
    """
    folder = Path(source)
    if not folder.is_dir():
        if folder.exists():
            raise UserError(f"{folder} is a file, not an export folder")
        if not REPO_ID.match(str(source)):
            raise UserError(f"export folder {folder} does not exist")
        folder = download(str(source), revision)
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} is not a gon-lightning export: it has no {CONFIG}")
    config = read_json(config_path)
    if not isinstance(config, dict) or "gon_lightning_format" not in config:
        raise UserError(f"{config_path} is not a gon-lightning export config (no gon_lightning_format)")
    if not isinstance(config["gon_lightning_format"], int) or config["gon_lightning_format"] > EXPORT_FORMAT:
        raise UserError(
            f"{config_path} has export format {config['gon_lightning_format']!r}; this gon-lightning "
            f"({__version__}) reads format {EXPORT_FORMAT}: upgrade gon-lightning"
        )
    spec = config.get("model")
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("class_path"), str)
        or not isinstance(spec.get("init_args", {}), dict)
    ):
        raise UserError(f"{config_path} has no model class_path and init_args")
    init_args = dict(spec.get("init_args") or {})
    for path in (spec["class_path"], *class_paths(init_args)):
        if not is_ours(path) and not trust_remote_code:
            raise UserError(
                f"{config_path} names {path}, code outside gon_lightning: pass trust_remote_code=True to import and "
                "run it (only for exports you trust)"
            )
        try:
            import_object(path, str(config_path))
        except UserError as error:
            raise UserError(f"{config_path} names {path}, which cannot be imported: {error.__cause__}") from error
    model_class = import_object(spec["class_path"], str(config_path))
    from gon_lightning.models import ImageModel

    if not (isinstance(model_class, type) and issubclass(model_class, ImageModel)):
        raise UserError(f"{config_path} names {spec['class_path']}, which is not a gon-lightning model")
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's seed alone
            model = model_class(**init_args)
    except UserError as error:
        raise UserError(f"{config_path}: {error}") from error
    except TypeError as error:
        raise UserError(f"{config_path}: {model_class.__name__} does not take these init_args ({error})") from error
    load_weights(model, folder / WEIGHTS, config_path)
    return model.to(map_location).eval()


def load_weights(model: torch.nn.Module, path: Path, config_path: Path) -> None:
    """Load `model.safetensors` into the model strictly; any difference is one line naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}: not a complete gon-lightning export")
    try:
        with safe_open(str(path), "pt") as weights:
            found = {
                key: (tuple(weights.get_slice(key).get_shape()), weights.get_slice(key).get_dtype())
                for key in weights.keys()  # noqa: SIM118 (safe_open is not iterable)
            }
            metadata = weights.metadata() or {}
    except Exception as error:
        raise UserError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from error
    here = import_path(type(model))
    saved = metadata.get("gon_lightning_model")
    if saved and saved != here:
        raise UserError(f"{path} holds the weights of a {saved}, but {config_path} describes a {here}")
    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
    }
    expected = model.state_dict()
    differences = [
        f"{key}: {found[key][0]} {found[key][1]} != {tuple(tensor.shape)} {names.get(tensor.dtype, tensor.dtype)}"
        for key, tensor in expected.items()
        if key in found
        and (found[key][0] != tuple(tensor.shape) or found[key][1] != names.get(tensor.dtype, found[key][1]))
    ]
    try:
        missing, unexpected = load_model(model, str(path), strict=False) if not differences else ([], [])
    except Exception as error:
        raise UserError(
            f"{path} does not load into the model {config_path} describes ({type(error).__name__})"
        ) from error
    detail = "; ".join(
        part
        for part in (
            f"missing {', '.join(sorted(missing)[:4])}" if missing else "",
            f"unexpected {', '.join(sorted(unexpected)[:4])}" if unexpected else "",
            f"differ {', '.join(differences[:4])}"
            + (f" (and {len(differences) - 4} more)" if len(differences) > 4 else "")
            if differences
            else "",
        )
        if part
    )
    if detail:
        raise UserError(f"{path} does not fit the model {config_path} describes ({detail})")
