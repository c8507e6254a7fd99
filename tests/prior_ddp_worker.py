"""Fit a tiny flow-matching prior in float64 on fixed latents, one process or DDP, and save its final state.

Used by tests/test_priors.py as `python tests/prior_ddp_worker.py OUT_FILE DEVICES BATCH_PER_PROCESS`. A script (not
a test module) because Lightning's DDP launcher starts the other ranks by re-running the command line.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gon_lightning.priors import FlowMatchingPrior

LATENTS, NZ, STEPS = 64, 4, 3


class Interleaved(torch.utils.data.Sampler):
    """Rank r of W takes rows r, r + W, ... in order: each DDP step's global batch is one process's batch (Lightning's
    own DistributedSampler would shuffle)."""

    def __init__(self, size: int) -> None:
        self.size = size

    @staticmethod
    def _shard() -> tuple[int, int]:
        dist = torch.distributed
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):
        rank, world = self._shard()
        return iter(range(rank, self.size, world))

    def __len__(self) -> int:
        return self.size // self._shard()[1]


def fit(out: str, devices: int, batch_size: int) -> None:
    torch.manual_seed(0)
    latents = torch.randn(LATENTS, NZ, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 50 + 3
    prior = FlowMatchingPrior(
        latent_size=NZ, hidden=16, depth=2, time_dim=8, sample_steps=4, warmup_steps=1, dropout=0.25
    )
    prior.set_statistics(latents)
    # the seed at the start of training: DDP's setup re-seeds every rank with it (Lightning's reset_seed), so the
    # single process must start its training from the same state
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision="64-true",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(prior, DataLoader(latents, batch_size=batch_size, sampler=Interleaved(LATENTS)))
    if trainer.global_rank == 0:
        torch.save({k: v.detach().cpu() for k, v in prior.state_dict().items()}, out)


if __name__ == "__main__":
    fit(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
