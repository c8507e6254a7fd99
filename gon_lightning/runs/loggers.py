"""The loggers of a run: W&B online or offline, its run id and settings, a CSV log beside it."""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jsonargparse import Namespace

from gon_lightning.errors import UserError
from gon_lightning.runs.checkpoints import CHECKPOINT_KEY
from gon_lightning.runs.wandb_shims import skip_pandas_import_for_media, skip_unstaged_launch_inputs

EVALUATION_SUBCOMMANDS = frozenset({"validate", "test", "predict"})


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


def with_csv_beside_wandb(logger: Any) -> Any:
    """A lone W&B logger (the default) gets a CSVLogger beside it, so the metrics are readable without W&B
    (`<run>/logs/version_N/metrics.csv`). A list of loggers is taken as given: `[WandbLogger]` is W&B alone."""
    if isinstance(logger, Namespace) and logger.get("class_path", "").rsplit(".", 1)[-1] == "WandbLogger":
        csv = Namespace(class_path="pytorch_lightning.loggers.CSVLogger", init_args=Namespace(save_dir="."))
        return [logger, csv]
    return logger


def wandb_settings(subcommand: str | None, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """W&B settings of this command beyond W&B's defaults, for `wandb.init(settings=...)`.

    An evaluation command (validate, test, predict) of a checkpoint that records its W&B run continues that run,
    whose `fit` saved the installed packages (`requirements.txt`), the environment that made the weights: listing
    them again (about 0.1 s per command) is skipped. Everything else is recorded as always: metrics, summary,
    config, tables, images and W&B's system metadata. `WANDB__SAVE_REQUIREMENTS` set by the user wins.
    """
    info = (checkpoint or {}).get(CHECKPOINT_KEY) or {}
    continues = subcommand in EVALUATION_SUBCOMMANDS and bool(info.get("wandb_id"))
    if continues and "WANDB__SAVE_REQUIREMENTS" not in os.environ:
        return {"x_save_requirements": False}
    return {}


def configure_loggers(logger: Any, run_dir: Path, wandb_id: str | None, group: str | None = None) -> str | None:
    """Fill in the logger configs (`trainer.logger`: one, a list, or a bool) for this run.

    W&B: files in the run folder, the folder's name, the run's id (a resume continues the W&B run), the group
    `<model>-<data>` and those two as tags unless given (dashboards filter on them), offline when
    nobody is logged in (returning a note with the sync command, printed when the run starts); log_model offline is
    refused. CSV and TensorBoard write
    `<run>/logs/version_N`: a resume, test or predict of the run adds a version, never overwrites one.
    """
    note = None
    items = logger if isinstance(logger, list) else [logger]
    for item in items:
        if not (isinstance(item, Namespace) and "class_path" in item):
            continue
        args = item.init_args if "init_args" in item else Namespace()
        item.init_args = args
        name = item.class_path.rsplit(".", 1)[-1]
        if name == "WandbLogger":
            if args.get("save_dir") in (None, ".") and not args.get("dir"):
                args.save_dir = str(run_dir)
            if args.get("name") is None:
                args.name = run_dir.name
            args.id = wandb_id
            if group and args.get("group") is None:
                args.group = group
            if group and args.get("tags") is None:
                args.tags = group.split("-", 1)
            if not args.get("offline") and wandb_offline():
                args.offline = True
            if args.get("offline") and args.get("log_model"):
                raise UserError(
                    "trainer.logger.log_model needs an online W&B run, but W&B is offline (WANDB_MODE, or not "
                    f"logged in). Checkpoints stay in {run_dir}/checkpoints; `wandb login`, or drop log_model."
                )
            if args.get("offline"):
                sync = f"wandb sync {run_dir}/wandb/offline-run-*"
                note = f"W&B offline: logging to {run_dir}/wandb (upload later: `{sync}`)"
            os.environ.setdefault("WANDB_RESUME", "allow")  # the same id continues the same W&B run
            skip_unstaged_launch_inputs()
            skip_pandas_import_for_media()
        elif name in ("CSVLogger", "TensorBoardLogger") and args.get("save_dir") in (None, ".", "runs"):
            args.save_dir = str(run_dir)
            args.name = "logs"
        elif name == "MLFlowLogger":
            configure_mlflow(args, run_dir)
    return note


MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def configure_mlflow(args: Namespace, run_dir: Path) -> None:
    """MLflow's tracking store: the user's (`tracking_uri`, or MLFLOW_TRACKING_URI), else a SQLite database in the run
    folder, `<run>/mlflow.db`, with the artifacts beside it. Lightning's own default, a `./mlruns` folder, is
    MLflow's file store, which MLflow 3 keeps in maintenance mode and refuses unless MLFLOW_ALLOW_FILE_STORE is set.
    `mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db` shows the run."""
    if args.get("run_name") is None:
        args.run_name = run_dir.name
    if args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI"):
        return  # a server or store of the user's: left as given
    folder = run_dir.resolve()
    args.tracking_uri = f"sqlite:///{folder / MLFLOW_DB}"
    if args.get("artifact_location") is None:
        args.artifact_location = (folder / MLFLOW_ARTIFACTS).as_uri()
