"""Run `gon-lightning fit` with extra arguments and record, per rank, the batches seen and the final parameters.

Used by tests/test_scale.py as `python tests/ddp_worker.py OUT_DIR -- CLI ARGS...`. It is a script (not a test
module) because Lightning's DDP launcher starts the other ranks by re-running the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from gon_lightning.cli import main


class Recorder(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.batches: list[torch.Tensor] = []
        self.grads: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch.detach().cpu().clone())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # after DDP's allreduce and the precision plugin's unscaling: the gradients the optimiser will use
        self.grads = {n: p.grad.detach().cpu().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_fit_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save({"batches": self.batches, "grads": self.grads, "state": state}, self.out / f"rank{rank}.pt")


if __name__ == "__main__":
    out, args = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1 :]
    cli = main(args, run=False)
    cli.trainer.callbacks.append(Recorder(out))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
