"""Checkpoint safety: atomic writes, weights-only loads, RNG state, run identity and safe interruption."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gon_lightning.errors import ONLY_WRITES_FAIL, UserError, attach, write_error, write_failure, writing
from gon_lightning.runs import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    keep_run,
    read_torch_file,
    slurm_detected,
    slurm_job_id,
    source_commit,
    surviving_checkpoint,
)


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def survivors(folder: Any) -> str:
    """What a run whose write failed still has, and what to do, in words (`folder`: its checkpoints folder)."""
    kept = surviving_checkpoint(folder)
    if kept.startswith("no checkpoint"):
        return f"{kept}; free space (or make the folder writable) and start again"
    return f"{kept}; free space (or make the folder writable) and resume from it"


def run_survivors(trainer: pl.Trainer) -> str:
    return survivors(getattr(trainer.checkpoint_callback, "dirpath", None))


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes to a temporary file and renames it over the target.

    A crash or kill mid-save leaves the previous checkpoint intact, never a truncated `last.ckpt`. The file gets
    the mode any new file gets (0666 less the umask), not the temporary file's private 0600. Loads use
    `weights_only=True` unless told otherwise, and an unreadable file is an error that names it.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
        path = Path(path)
        what = f"checkpoint {path.name} (epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')})"
        with writing(what, path.parent, lambda: survivors(path.parent)):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would survive the rename
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        keep_run()  # the run folder now holds a checkpoint: a later failure leaves it as it is

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        # not only Lightning checkpoints: the ddp_spawn/ddp_fork launchers hand the trained weights back to the
        # main process as a bare state_dict file (a user's --ckpt_path is checked as a checkpoint by the CLI)
        return read_torch_file(path, map_location=map_location)


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` is always the latest state, improved or not, written once.

    Lightning 2.6 writes `last.ckpt` only at a step where it also saves a top-k checkpoint (with `save_last:
    link`, it links `last.ckpt` to the newest top-k file, however old): after an epoch in which the monitored
    val/sse did not improve, `last.ckpt` still held the best epoch's state, and resuming from it silently repeated
    the epochs since. Here `last.ckpt` is refreshed at every save point (validation end, or train epoch end
    without validation):
    - `save_last: link` (the CLI's default): a relative symlink to the checkpoint written at this very step when
      there is one (no second write of the same state), else the state written to `last.ckpt` itself: one
      full write per save point either way;
    - `save_last: true`: always a file of its own (a second write when a top-k checkpoint was just written).
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: the best-k state of runs written before this class existed still resumes
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # `max_steps` reached before the epoch's last batch: Lightning ends the epoch there (its epoch-end hooks
        # run, and a checkpoint written then says the epoch is over, so a continuation would skip the rest of it).
        # Written now, as a SIGTERM stop writes it, the checkpoint is mid-epoch and a continuation with a larger
        # max_steps trains exactly what the straight run trains; the epoch end then finds this step saved.
        epoch_ends = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if 0 <= trainer.max_steps <= trainer.global_step and not epoch_ends:
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        # skipped where nothing may be saved (sanity check, fast_dev_run, not fitting) or this step already was
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        last = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        # last.ckpt is the run's own: replaced, never a last-v1.ckpt beside it. Lightning versions the name when a
        # last.ckpt exists that its restored state does not name, which is the case after a resume from a
        # last.ckpt written on SIGTERM before the run's first epoch ended, or from a run folder that was moved:
        # the next requeue would then continue from the stale last.ckpt
        self.last_model_path = last
        if self.save_last != "link":
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        saved = self._last_checkpoint_saved
        if (
            self._last_global_step_saved == trainer.global_step
            and saved
            and os.path.abspath(saved) != os.path.abspath(last)
        ):
            return super()._save_last_checkpoint(trainer, monitor_candidates)  # a link to this step's checkpoint
        # nothing written at this step (or only last.ckpt): the state itself, once
        self.last_model_path = last
        self._save_checkpoint(trainer, last)


def requeue_slurm_job() -> str:
    """`scontrol requeue` this SLURM job, once its checkpoint is written: what happened, in words."""
    job = slurm_job_id()
    if job is None:
        return "not requeued: not a SLURM job"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"requeueing SLURM job {job} failed ({type(error).__name__}: {error})"
    if result.returncode != 0:
        return f"requeueing SLURM job {job} failed: {(result.stderr or result.stdout).strip()}"
    return f"SLURM job {job} requeued: its restart continues this run"


def _rng_state() -> dict[str, Any]:
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_gauss), float(np_cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, gauss, cached))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunState(Callback):
    """What an exact resume needs beyond Lightning's own state, and a checkpoint on SIGTERM / SIGUSR1 / Ctrl-C.

    - every checkpoint records the model class, the run folder and the W&B run id (so a resume continues the
      same run) and the random number generators (so the data order after a resume is the straight run's);
    - SIGTERM (a scheduler's time limit or preemption), or a first Ctrl-C, stops training at the next batch
      boundary and writes `last.ckpt`; a second Ctrl-C stops at once without saving (the previous checkpoint
      stays intact: writes are atomic);
    - under SLURM, SIGUSR1 (`#SBATCH --signal=SIGUSR1@90`: the time limit is near) does the same and then
      requeues the job (`scontrol requeue`), whose restart continues the run from that `last.ckpt`.
    """

    def __init__(self, run_dir: str | Path, wandb_id: str | None = None) -> None:
        self.run_dir = str(run_dir)
        self.wandb_id = wandb_id
        self.interrupted: dict[str, Any] | None = None
        self._signal: str | None = None
        self._previous_sigint: Any = None
        self._previous_sigusr1: Any = None
        self._restored_rng: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "gon_lightning.RunState"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            _set_rng_state(state_dict["rng"])
            self._restored_rng = state_dict["rng"]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # A checkpoint written mid-epoch is resumed mid-epoch: Lightning then creates that epoch's DataLoader
        # iterator again, which draws its base seed from the global generator, a draw the straight run made before
        # the checkpoint; so the generators are set once more right before the first resumed batch, where the
        # straight run stood. (At an epoch's start, batch 0, that draw is the new epoch's own, as in a straight run.)
        if self._restored_rng is not None:
            # (the loop's count, not batch_idx: a stateful loader, litdata's, resumes its batches from 0)
            if trainer.fit_loop.epoch_loop.batch_progress.current.ready > 1:
                _set_rng_state(self._restored_rng)
            self._restored_rng = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if not isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            keep_run()  # (ours keeps the run once the file is written: a failed write leaves no result)
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "model": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "run_dir": self.run_dir,
            "wandb_id": self.wandb_id,
            "commit": source_commit(),  # the code that trained it, for the model card of an export
        }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.checkpoint_callback is None:  # checkpointing off: an epoch's metrics and panels are the result
            keep_run()

    # an evaluation's result: its metrics are logged (and, for test and predict, written) once its loop ends
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            keep_run()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        keep_run()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        keep_run()

    # interruption
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.interrupted = None
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._signal is not None:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._signal = "SIGINT"
            print("\nCtrl-C: stopping after this batch and saving a checkpoint (Ctrl-C again to stop at once)")
            trainer._signal_connector.received_sigterm = True

        def on_requeue_signal(signum: int, frame: Any) -> None:
            self._signal = "SIGUSR1"
            print("SIGUSR1: stopping after this batch, saving a checkpoint and requeueing the SLURM job", flush=True)
            trainer._signal_connector.received_sigterm = True

        self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)
        if slurm_detected():
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, on_requeue_signal)

    def _restore_sigint(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def _logs_folder(self, trainer: pl.Trainer) -> str:
        """Where the loggers write (a write error without a file name comes from one of them): the run folder's."""
        return next((logger.log_dir for logger in trainer.loggers if getattr(logger, "log_dir", None)), self.run_dir)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        # a disk full or read-only anywhere else (the metrics, a logger's files): one line too
        cause = None if isinstance(exception, UserError) else write_failure(exception, ONLY_WRITES_FAIL)
        if cause is not None:
            folder = Path(cause.filename).parent if cause.filename else self._logs_folder(trainer)
            what = Path(cause.filename).name if cause.filename else "the metrics and logs"
            attach(exception, write_error(exception, what, folder, run_survivors(trainer), ONLY_WRITES_FAIL))
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        checkpoint = trainer.checkpoint_callback
        path = None  # checkpointing is off (trainer.enable_checkpointing false): nothing is written
        if checkpoint is not None:
            path = os.path.join(checkpoint.dirpath or os.path.join(self.run_dir, "checkpoints"), "last.ckpt")
            trainer.save_checkpoint(path)
        self.interrupted = {"signal": self._signal or "SIGTERM", "checkpoint": path, "step": trainer.global_step}
        if self._signal == "SIGUSR1" and trainer.is_global_zero:
            self.interrupted["requeued"] = requeue_slurm_job()
        exception.gon_lightning = self.interrupted  # type: ignore[attr-defined]
