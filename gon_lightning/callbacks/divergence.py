"""Stop a run whose loss or gradients go non-finite before any checkpoint holds its weights (docs/runs.md).

Reading a tensor's value on the host waits for the GPU (a synchronisation), so on a GPU nothing is read per step:
each step's loss and gradient norm stay on the device (0-dim tensors kept in a list), and they are stacked and read
every `check_every_n_steps` steps, before validation, at each epoch end and before every checkpoint. On the CPU a
read waits for nothing, and tensors kept across steps would cost memory: each is a small allocation made between the
step's large ones, and a hundred of them alive in glibc's heap keep it from returning the freed batch buffers, so a
process grew by about a batch's activations every step between checks (measured: a DDP rank of the GON at 128 px,
+120 MiB between its batches 24 and 100; issue 38, docs/data_at_scale.md). There each step's values are read
at once as Python numbers. The first non-finite one names the step. The weights of the steps after it are never
written: the check before a save stops the run first, so `last.ckpt` keeps the last good state.

Under `precision: 16-mixed` a non-finite loss or gradient is an fp16 overflow the GradScaler handles (it skips
the step and halves its scale), not divergence; a run diverges there when the scale has fallen below
`min_loss_scale` (fairseq's rule): every step overflows whatever the scale.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from gon_lightning.errors import UserError, attach, positive, positive_int
from gon_lightning.runs import UnfinishedRun, surviving_checkpoint

LOSS, GRADIENTS, SCALE = 0, 1, 2  # the rows of what a check reads
NON_FINITE_INPUT = "all elements of input should be between 0 and 1"  # binary_cross_entropy fed NaN
READ_AT_ONCE = ("cpu",)  # devices whose values are read at each step: a read waits for no queue there


class DivergenceError(UserError):
    """Training diverged: a loss or gradient went non-finite."""


class DivergenceGuard(Callback):
    """Stop training, with one line saying where and what to try, when the loss or the gradients go non-finite;
    no checkpoint is ever written after that step.

    Args:
        check_every_n_steps: how often the values kept on the device are read on the host (each read waits for
            the GPU); they are also read before validation, at each epoch end and before every checkpoint.
        min_loss_scale: under precision 16-mixed, the GradScaler's scale below which the run counts as diverged
            (its skipped steps alone are not divergence).
    """

    def __init__(self, check_every_n_steps: int = 100, min_loss_scale: float = 1e-4) -> None:
        positive_int("divergence.check_every_n_steps", check_every_n_steps)
        positive("divergence.min_loss_scale", min_loss_scale)
        self.check_every_n_steps = check_every_n_steps
        self.min_loss_scale = min_loss_scale
        # per recorded batch (stacked and read at a check): loss, gradient norm, loss scale; device tensors on a GPU,
        # floats on the CPU (no tensor outlives its step there: see the module's docstring)
        self._recorded: list[tuple[Tensor | float, Tensor | float, Tensor | float]] = []
        self._steps: list[tuple[int, int]] = []  # (global step after it, epoch) of each recorded batch
        self._loss: Tensor | None = None  # this batch's, until its end
        self._norm: Tensor | None = None

    # --- recording, on the device (no kernel but the gradient norm's) ----------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss  # a step may call backward twice

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            self._norm = norm if self._norm is None else self._norm + norm

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss, norm, self._loss, self._norm = self._loss, self._norm, None, None
        if loss is None:
            return  # no backward (a skipped step)
        scaler = _scaler(trainer)
        # after the scaler's update: the scale the next step starts with (a 0-dim tensor, like the loss)
        scale = scaler.scale(torch.ones((), device=loss.device)) if scaler is not None else loss
        values = (loss, loss if norm is None else norm, scale)
        if loss.device.type in READ_AT_ONCE:
            values = tuple(float(v) for v in values)  # type: ignore[assignment]  (no wait: nothing is queued)
        self._recorded.append(values)
        self._steps.append((trainer.global_step, trainer.current_epoch))
        if len(self._steps) >= self.check_every_n_steps:
            self.check(trainer, pl_module, every_rank=True)

    # --- reading, on the host -----------------------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self.check(trainer, pl_module, every_rank=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module, every_rank=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)  # raised here, the checkpoint is never written
        # and the weights themselves, whatever made them non-finite (one pass over them per checkpoint)
        weights = [t for t in checkpoint.get("state_dict", {}).values() if t.is_floating_point()]
        if weights and not bool(torch.stack([t.isfinite().all() for t in weights]).all()):
            which = "the weights went non-finite (found writing the checkpoint)"
            step, epoch = trainer.global_step, trainer.current_epoch
            raise DivergenceError(self.message(trainer, pl_module, which, step, epoch))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # a loss that takes no non-finite input (binary cross-entropy) raises where the weights or the latents went
        # non-finite (at the step after a non-finite one, or in the forward pass of a step whose weights were still
        # finite): the user is told about the divergence, not the error it caused
        if isinstance(exception, UserError):
            return
        try:
            self.check(trainer, pl_module)
        except DivergenceError as divergence:
            attach(exception, divergence)
            return
        if trainer.training and NON_FINITE_INPUT in str(exception):
            which = "the reconstruction went non-finite (binary cross-entropy was fed NaN)"
            step, epoch = trainer.global_step + 1, trainer.current_epoch
            attach(exception, DivergenceError(self.message(trainer, pl_module, which, step, epoch)))

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, every_rank: bool = False) -> None:
        """Read what was recorded since the last check; raise a DivergenceError at the first non-finite step.
        `every_rank`: every process checks at this point, so they decide together (one rank stopping alone
        would leave the others waiting)."""
        recorded, steps, self._recorded, self._steps = self._recorded, self._steps, [], []
        if not recorded and not every_rank:
            return
        if recorded:  # (3, steps) on the host: the one synchronisation
            values = torch.stack([torch.stack([_scalar(v) for v in step]) for step in recorded], 1).cpu()
        else:
            values = torch.zeros(3, 0)
        if _scaler(trainer) is not None:
            bad = values[SCALE] < self.min_loss_scale
            which = f"every step overflowed fp16 and the loss scale fell below {self.min_loss_scale:g}"
        else:
            finite = values[:2].isfinite()
            bad = ~finite.all(0)
            which = None
        diverged = bool(bad.any())
        if every_rank and trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if not diverged:
            return
        if bad.any():
            index = int(bad.nonzero()[0])
            if which is None:
                which = "the loss went non-finite" if not finite[LOSS, index] else "the gradients went non-finite"
            step, epoch = steps[index]
        else:  # another process's
            which = "the loss or the gradients of another process went non-finite"
            step, epoch = (steps or [(0, 0)])[-1]
        raise DivergenceError(self.message(trainer, pl_module, which, step, epoch))

    def message(self, trainer: pl.Trainer, pl_module: pl.LightningModule, which: str, step: int, epoch: int) -> str:
        checkpoint = trainer.checkpoint_callback
        folder = getattr(checkpoint, "dirpath", None)
        kept = surviving_checkpoint(folder)
        if kept.startswith("no checkpoint"):
            removed = " (the run folder is removed)" if UnfinishedRun.path else ""
            kept = f"no checkpoint was written before it{removed}"
        else:
            kept = f"the last good checkpoint is kept: {kept}"
        lr = getattr(pl_module, "lr", None)
        tries = [f"a lower --model.init_args.lr (now {lr:g})" if lr is not None else "a lower learning rate"]
        if not trainer.gradient_clip_val:
            tries.append("gradient clipping (--trainer.gradient_clip_val 1.0)")
        if _scaler(trainer) is not None:
            tries.append("--trainer.precision bf16-mixed instead of 16-mixed")
        return f"training diverged: {which} at step {step} (epoch {epoch}); {kept}. Try {', or '.join(tries)}"


def _scalar(value: Tensor | float) -> Tensor:
    return value.float().reshape(()) if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float32)


def _scaler(trainer: pl.Trainer) -> Any:
    """The GradScaler of precision 16-mixed, or None."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None
