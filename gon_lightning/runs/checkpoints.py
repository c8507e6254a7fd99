"""Checkpoint rules: what `--ckpt_path` may name, safe loading, and whether a checkpoint fits the model given."""

from __future__ import annotations

import functools
import importlib
import subprocess
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from gon_lightning.errors import UserError

CHECKPOINT_KEY = "gon_lightning"  # what gon-lightning adds to every checkpoint it writes
CHECKPOINT_FORMAT = 1
# `--ckpt_path` values Lightning resolves itself (no file to check before the run)
LIGHTNING_CKPT_PATHS = frozenset({"best", "hpc", "registry"})
# model options that only change how a trained model is evaluated (a learned prior's ODE solver and steps among
# them): given with --ckpt_path, they win over the checkpoint's values; any other model option given must agree with
# the checkpoint (see keep_given_model_options)
EVALUATION_OPTIONS = frozenset({"norm_eval", "eval_latent", "sample_steps", "solver"})


@functools.cache
def source_commit() -> str | None:
    """The git commit of the gon_lightning source in use (`-dirty` with uncommitted changes) when it is a checkout
    of gon-lightning itself, else None (an installed wheel; a virtual environment inside another repository)."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package.parent:
        return None
    return git("describe", "--always", "--dirty", "--abbrev=40")


def read_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; a missing, corrupt or truncated file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UserError(
            f"checkpoint {path} is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`read_torch_file` of a Lightning checkpoint; a file of anything else is a UserError naming it."""
    checkpoint = read_torch_file(path, map_location)
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "pytorch-lightning_version" not in checkpoint
    ):
        raise UserError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict / pytorch-lightning_version)")
    return checkpoint


def surviving_checkpoint(folder: str | Path | None) -> str:
    """What a run that failed still resumes from, in words: `folder`'s last.ckpt with its epoch and step if it
    loads (read mapped: the weights are not copied), else that none does."""
    last = Path(folder) / "last.ckpt" if folder else None
    if last is None or not last.exists():
        return "no checkpoint was written yet"
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        where = f"epoch {checkpoint['epoch']}, step {checkpoint['global_step']}"
    except Exception as error:
        return f"{last} does not load ({type(error).__name__})"
    return f"{last} ({where}) still loads"


def load_model_weights(model: torch.nn.Module, ckpt_path: str | Path) -> None:
    """The checkpoint's weights into `model`, as Lightning restores them (its hook first, then the state_dict), after
    `check_model_checkpoint`."""
    checkpoint = load_checkpoint_file(ckpt_path)
    check_model_checkpoint(ckpt_path, checkpoint, model)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])


def check_model_checkpoint(path: str | Path, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint of another model class or another architecture, naming the file."""
    info = checkpoint.get(CHECKPOINT_KEY) or {}
    saved = info.get("model")
    here = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved and saved != here:
        raise UserError(f"checkpoint {path} holds a {saved}, but the config builds a {here}")
    # a fitted sampler's buffers and attached priors (models/latent.py) exist once fitted or attached: a checkpoint
    # may hold them, and loading adopts them
    optional = getattr(model, "optional_state_key", lambda key: False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not optional(k)}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if not optional(k)}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        extra = sorted(found.keys() - expected.keys())
        shapes = [
            f"{k}: {found[k]} != {expected[k]}" for k in expected.keys() & found.keys() if expected[k] != found[k]
        ]
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(extra[:4])}" if extra else "",
                f"shapes {', '.join(shapes[:4])}" if shapes else "",
            )
            if part
        )
        raise UserError(f"checkpoint {path} does not fit this model ({detail}); check the model options in the config")


def resolve_ckpt_path(ckpt_path: str, runs_root: str | Path, name: str) -> str:
    """`last`: the newest `last.ckpt` of runs called `name` under `runs_root` (never a silent fresh start); a file
    path must exist; Lightning's own values (`best`, `hpc`, `registry`) pass unchanged."""
    if ckpt_path == "last":
        pattern = f"{name}-*/checkpoints/last.ckpt"
        found = sorted(Path(runs_root).glob(pattern), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"--ckpt_path last: nothing matches {Path(runs_root) / pattern}")
        return str(found[-1])
    if ckpt_path not in LIGHTNING_CKPT_PATHS and not Path(ckpt_path).is_file():
        raise UserError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    return ckpt_path


def _class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def keep_given_model_options(given: Namespace | None, model: Namespace, ckpt_path: str) -> None:
    """Never silently drop a model option given with --ckpt_path (LightningCLI replaces the model options by the
    checkpoint's, `model`): an evaluation option given wins (written into `model`); any other given option that
    differs is refused. `given` holds only what the user gave (command line, --config), no defaults."""
    if given is None:
        return
    conflicts = []
    if given.get("class_path") and _class_of(given.class_path) is not _class_of(model.class_path):
        stored, wanted = (path.rsplit(".", 1)[-1] for path in (model.class_path, given.class_path))
        conflicts.append(f"model: checkpoint {stored}, given {wanted}")
    else:
        for key, value in (given.get("init_args") or Namespace()).items():
            stored = model.init_args.get(key)
            if value == stored:
                continue
            if key in EVALUATION_OPTIONS:
                model.init_args[key] = value
            else:
                conflicts.append(f"model.init_args.{key}: checkpoint {stored}, given {value}")
    if conflicts:
        run_config = Path(ckpt_path).parent.parent / "config.yaml"
        where = f" (--config {run_config} has them all)" if run_config.is_file() else ""
        raise UserError(
            f"--ckpt_path {ckpt_path} does not hold the model given: {'; '.join(conflicts)}. These options "
            "decide what the checkpoint's weights mean (or whether they load) and how its training goes on; only "
            f"{', '.join(sorted(EVALUATION_OPTIONS))} may differ from the checkpoint. Drop them or give the "
            f"checkpoint's values{where}."
        )
