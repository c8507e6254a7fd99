"""Run folders, the W&B online/offline decision and checkpoint checks: the CLI's run bookkeeping.

Every run owns `runs/<model>-<data>-<YYYYmmdd-HHMMSS>[-N]/` holding `config.yaml`, `checkpoints/`, `images/`
and the logger's files, so two runs never share (or clash over) a file (DESIGN trap 6).
"""

from __future__ import annotations

import netrc
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from gon_lightning.errors import UserError

CHECKPOINT_KEY = "gon_lightning"  # what gon-lightning adds to every checkpoint it writes
CHECKPOINT_FORMAT = 1
RUN_DIR_ENV = "GON_LIGHTNING_RUN_DIR"  # hands rank 0's run folder to the processes DDP launches
WANDB_ID_ENV = "GON_LIGHTNING_WANDB_ID"


def short_name(class_path: str, suffix: str = "") -> str:
    return class_path.rsplit(".", 1)[-1].removesuffix(suffix).lower()


def is_launched_rank() -> bool:
    """A process started by a DDP launcher for a rank other than 0 (it must reuse rank 0's run folder)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/name-<timestamp>` (with -2, -3 ... when taken): mkdir is atomic, so concurrent runs never share."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not create a run folder under {root}")


def new_wandb_id() -> str:
    """A fresh W&B run id, or the one W&B chose: a sweep agent names its run in WANDB_RUN_ID (and W&B ignores any
    other id), so checkpoints must record that one for a resume to continue the same run."""
    return os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host: what `wandb login` leaves behind."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        path = os.environ.get("NETRC") or None
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Whether W&B must run offline: WANDB_MODE says so, or nobody is logged in (never prompt, never hang)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_logged_in()


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; a missing, corrupt, truncated or foreign file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UserError(
            f"checkpoint {path} is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "pytorch-lightning_version" not in checkpoint
    ):
        raise UserError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict / pytorch-lightning_version)")
    return checkpoint


def check_model_checkpoint(path: str | Path, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint of another model class or another architecture, naming the file."""
    info = checkpoint.get(CHECKPOINT_KEY) or {}
    saved = info.get("model")
    here = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved and saved != here:
        raise UserError(f"checkpoint {path} holds a {saved}, but the config builds a {here}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
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
