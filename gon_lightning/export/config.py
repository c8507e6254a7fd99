"""`config.json`: the export format, the model's class path and constructor arguments, and the files of an export
folder."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from gon_lightning import __version__
from gon_lightning.errors import UserError
from gon_lightning.nn.networks import MODULE_GIVEN, import_path

EXPORT_FORMAT = 1
WEIGHTS, CONFIG, RUN_CONFIG, CARD = "model.safetensors", "config.json", "config.yaml", "README.md"
#: the model options that name a network (`gon_lightning.nn.networks`): the classes they name are code to trust
NETWORK_OPTIONS = ("decoder", "encoder")
PACKAGE = "gon_lightning"


def _plain(value: Any) -> Any:
    """JSON's types: tuples as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """What `config.json` says of a model: its class path and constructor arguments (its saved hyperparameters,
    without LightningCLI's `_class_path`/`_instantiator`)."""
    init_args = {key: value for key, value in dict(model.hparams).items() if not key.startswith("_")}
    for name in NETWORK_OPTIONS:
        recorded = init_args.get(name)
        if isinstance(recorded, Mapping) and MODULE_GIVEN in recorded:
            raise UserError(
                f"model.init_args.{name} was given as a built module ({recorded[MODULE_GIVEN]}), which an export "
                "cannot rebuild: give the network by class (class_path/init_args) and train or load it again"
            )
    config = {
        "gon_lightning_format": EXPORT_FORMAT,
        "gon_lightning_version": __version__,
        "model": {"class_path": import_path(type(model)), "init_args": _plain(init_args)},
    }
    priors = model.prior_specs() if hasattr(model, "prior_specs") else {}
    if priors:  # for the reader: the weights carry the same spec, and loading rebuilds the priors from it
        config["priors"] = _plain(priors)
    return config


def class_paths(init_args: Mapping[str, Any]) -> Iterator[str]:
    """The classes (or functions) a model's network options name."""
    for name in NETWORK_OPTIONS:
        value = init_args.get(name)
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
            yield value["class_path"]


def is_ours(path: str) -> bool:
    return path == PACKAGE or path.startswith(PACKAGE + ".")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({type(error).__name__}: {error})") from error
