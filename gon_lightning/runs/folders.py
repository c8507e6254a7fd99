"""Run folders: one per run, made atomically, continued by a resume, shared by every process of a job, and
removed when the command that made it fails before leaving a result."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from gon_lightning.errors import UserError
from gon_lightning.runs.checkpoints import CHECKPOINT_KEY
from gon_lightning.runs.job import (
    chosen_by_rank_zero,
    is_launched_rank,
    slurm_job_name,
    slurm_restart_count,
    torchrun_agent_store,
)
from gon_lightning.runs.loggers import new_wandb_id

DEFAULT_RUNS_ROOT = "runs"
RUN_DIR_ENV = "GON_LIGHTNING_RUN_DIR"  # hands rank 0's run folder to the processes DDP launches
WANDB_ID_ENV = "GON_LIGHTNING_WANDB_ID"


class UnfinishedRun:
    """The run folder this process made, until the command leaves a result in it (a checkpoint; for validate, test
    and predict, a finished loop): a command that fails before then removes it, so nothing is left behind."""

    path: Path | None = None
    root: Path | None = None  # the runs root, when this process made it too

    @classmethod
    def forget(cls) -> None:
        cls.path = cls.root = None


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/name-<timestamp>` (with -2, -3 ... when taken): mkdir is atomic, so concurrent runs never share.
    The folder counts as unfinished until `keep_run`."""
    root = Path(root)
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        UnfinishedRun.path, UnfinishedRun.root = path, root if made_root else None
        return path
    raise UserError(f"could not create a run folder under {root}")


def honour_default_root_dir(config: Namespace) -> None:
    """`--trainer.default_root_dir DIR` (Lightning's root of all outputs) is where run folders go, as `--runs_root`;
    the trainer's own default_root_dir then becomes the run folder. Both given and different is an error."""
    root = config.trainer.get("default_root_dir")
    if root is None:
        return
    if config.runs_root != DEFAULT_RUNS_ROOT and Path(config.runs_root) != Path(root):
        raise UserError(
            f"--trainer.default_root_dir {root} and --runs_root {config.runs_root} both say where run folders go: "
            "give one of them"
        )
    config.runs_root = str(root)


def job_run_dir(root: str | Path, name: str, job: str) -> Path:
    """`root/name-<job>` (e.g. `gon-mnist-slurm-4242`), the run folder every rank of a job names alike; it counts as
    unfinished (see `new_run_dir`) for rank 0 when it held nothing yet."""
    root = Path(root)
    made_root = not root.exists()
    path = root / f"{name}-{job}"
    path.mkdir(parents=True, exist_ok=True)
    if not is_launched_rank() and not any(path.iterdir()):
        UnfinishedRun.path, UnfinishedRun.root = path, root if made_root else None
    return path


def requeued_checkpoint(runs_root: str | Path, name: str) -> str | None:
    """Under SLURM, the `last.ckpt` of this job step's run when the job was requeued (preempted, or its time limit
    near): `fit` continues the run from it without `--ckpt_path`. On a first start a run of the same name in the
    job step is refused: a second `fit` would otherwise continue the first after a requeue."""
    job = slurm_job_name()
    if job is None:
        return None
    run_dir = Path(runs_root) / f"{name}-{job}"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    if slurm_restart_count() == 0:
        raise UserError(
            f"{run_dir} already holds a run of this SLURM job step (SLURM_JOB_ID {os.environ.get('SLURM_JOB_ID')}): "
            "start each fit of the same model and data in its own `srun` step, or give --ckpt_path to continue it"
        )
    return str(last)


def resolve_run(
    runs_root: str | Path, name: str, ckpt_path: str | None, checkpoint: dict[str, Any] | None
) -> tuple[Path, str | None]:
    """The run folder (created) and W&B id of this command, one for every process of the job.

    A loaded checkpoint continues its run: the folder it lies in (wherever that was moved), else the folder it
    records, and its W&B id. Otherwise a new run, chosen once per job (see `gon_lightning.runs.job`): named after
    the SLURM job, chosen by rank 0 and shared through torchrun's store, or inherited from the process that
    launched this one.
    """
    run_dir, wandb_id = None, None
    if checkpoint is not None and ckpt_path is not None:
        path = Path(ckpt_path)
        info = checkpoint.get(CHECKPOINT_KEY) or {}
        if path.parent.name == "checkpoints":
            run_dir = path.parent.parent
        elif info.get("run_dir") and Path(info["run_dir"]).is_dir():
            run_dir = Path(info["run_dir"])
        wandb_id = info.get("wandb_id")
    if run_dir is None:
        job = slurm_job_name()
        if job is not None:
            run_dir = job_run_dir(runs_root, name, job)
        elif torchrun_agent_store():
            chosen = chosen_by_rank_zero("run", lambda: f"{new_run_dir(runs_root, name)}\n{wandb_id or new_wandb_id()}")
            folder, wandb_id = chosen.split("\n")
            run_dir = Path(folder)
        elif is_launched_rank():
            if not os.environ.get(RUN_DIR_ENV):
                raise UserError(
                    "this process is not rank 0 of its job, and it was started neither by torchrun, nor by srun, "
                    "nor by the process of rank 0 on its node, so it cannot learn rank 0's run folder: start the "
                    "nodes of a job with torchrun or srun (docs/clusters.md)"
                )
            run_dir = Path(os.environ[RUN_DIR_ENV])
            wandb_id = os.environ.get(WANDB_ID_ENV) or None
        else:
            run_dir = new_run_dir(runs_root, name)
    wandb_id = wandb_id or new_wandb_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # processes launched for other ranks inherit it
    os.environ[WANDB_ID_ENV] = wandb_id
    return run_dir, wandb_id


def keep_run() -> None:
    """The command has left a result (a checkpoint, test metrics, predictions): its run folder stays."""
    UnfinishedRun.forget()


def discard_unfinished_run() -> None:
    """Remove the run folder this process made, with its config, logs and offline W&B run, when the command ends
    before leaving a result in it: a failure while the data was prepared, set up or first loaded, a bad option
    found late, a signal before the first checkpoint. The runs root goes too if this process made it and it is
    now empty. A resumed run's folder was never made here, so it is never removed."""
    path, root = UnfinishedRun.path, UnfinishedRun.root
    UnfinishedRun.forget()
    if path is None or not path.is_dir() or is_launched_rank():
        return
    shutil.rmtree(path, ignore_errors=True)
    if root is not None and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def fill_run_paths(config: Namespace, run_dir: Path) -> None:
    """Point every output the user left unset into the run folder; checkpoint loads default to weights only."""
    config.trainer.default_root_dir = str(run_dir)
    for group, key, folder in (
        ("checkpoint", "dirpath", "checkpoints"),
        ("images", "dirpath", "images"),
        ("predictions", "output_dir", "predictions"),
    ):
        if config.get(group) is not None and config[group][key] is None:
            config[group][key] = os.path.join(run_dir, folder)
    if "weights_only" in config and config.weights_only is None:
        config.weights_only = True
