"""What the CLI tells the user when a command ends: what to look at and run next, how to resume."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

NO_CHECKPOINTS = (
    "checkpointing is off (--trainer.enable_checkpointing false): this run writes no checkpoint and cannot be resumed"
)


def fit_summary(run_dir: Path, trainer: Any, images: str | None = None) -> str:
    """What to look at and run next, printed when `fit` ends: the best checkpoint and its score, the images, and
    the exact commands that test it and that train on from the last checkpoint."""
    checkpoint = trainer.checkpoint_callback
    config = shlex.quote(str(run_dir / "config.yaml"))
    lines = [f"run folder: {run_dir}"]
    last = Path(checkpoint.dirpath) / "last.ckpt" if checkpoint is not None and checkpoint.dirpath else None
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best and checkpoint.best_model_score is not None:
        lines.append(f"best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}  {best}")
    if images and Path(images).is_dir():
        lines.append(f"images: {images}")
    tested = best or (str(last) if last and last.is_file() else "")
    if tested:
        lines.append(f"test it: gon-lightning test --config {config} --ckpt_path {shlex.quote(tested)}")
    if checkpoint is None:
        lines.append("no checkpoint written (checkpointing was off): nothing to test or resume")
    if last and last.is_file():
        finished = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch
        more = f" --trainer.max_epochs {2 * trainer.max_epochs}" if finished else ""
        if 0 < trainer.max_steps <= trainer.global_step:  # bounded by steps: continued exactly (docs/runs.md)
            more = f" --trainer.max_steps {2 * trainer.max_steps}"
        lines.append(f"train on: gon-lightning fit --config {config} --ckpt_path {shlex.quote(str(last))}{more}")
    return "\n".join(lines)


def stopped_message(info: dict[str, Any] | None) -> str | int:
    """What a run stopped by a signal exits with: a message before training began, else (after printing where the
    checkpoint is, and the command that resumes from it or that SLURM requeued the job) 130 for SIGINT, 138 for
    SIGUSR1, 143 for SIGTERM."""
    if not info:
        return "gon-lightning: stopped by a signal before training began; no checkpoint written"
    if info["checkpoint"] is None:
        stopped = f"{info['signal']} received: stopped at step {info['step']}"
        return f"gon-lightning: {stopped}; checkpointing is off: nothing saved, nothing to resume"
    run_dir = Path(info["checkpoint"]).parent.parent
    resume = f"gon-lightning fit --config {run_dir / 'config.yaml'} --ckpt_path {info['checkpoint']}"
    lines = [
        f"gon-lightning: {info['signal']} received: stopped at step {info['step']}; checkpoint saved to "
        f"{info['checkpoint']}"
    ]
    if info.get("requeued"):
        lines.append(info["requeued"])
    lines.append(f"resume with: {resume}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return {"SIGINT": 130, "SIGUSR1": 138}.get(info["signal"], 143)
