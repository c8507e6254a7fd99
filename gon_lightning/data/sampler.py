"""The training order: a fresh permutation every epoch, sharded by rank, that a resumed epoch continues.

One process draws each epoch's permutation from a seed taken from torch's global generator at the epoch's first
batch, exactly as `DataLoader(shuffle=True)` does (so the same `--seed_everything` gives the published loop's
order, and checkpoints, which store the generators, resume it). Under DDP every rank must hold the same
permutation without talking to the others, so it is seeded with `seed + epoch` as Lightning's DistributedSampler
does; rank r takes places r, r + W, r + 2W, ... of it, and the last `n % W` are left out rather than padded with
repeats, so every sample is seen at most once per epoch across ranks.

Lightning restores its loop counters from a checkpoint written mid-epoch but starts the DataLoader afresh (and
only warns): the rest of the epoch would replay its first batches. `state` and `resume` carry the epoch's seed
and how far it got, so the resumed epoch gathers exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from gon_lightning.errors import DATA, UserError


class EpochSampler(DistributedSampler):
    """Indices of this rank's share of each epoch's permutation of `size` samples.

    A DistributedSampler subclass only so that Lightning leaves it in place under DDP (it injects its own
    DistributedSampler into loaders that have none); the parent's constructor, which wants a dataset and a
    process group, is not called.

    Args:
        size: number of samples.
        num_replicas: number of ranks (DDP world size).
        rank: this process's rank.
        seed: None in one process (each epoch's seed comes from the global generator); under DDP the seed every
            rank shares.
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, seed: int | None = None) -> None:
        if num_replicas > 1 and seed is None:
            raise ValueError("ranks must share a seed: with seed None each would draw its own permutation")
        self.size = size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = True
        self.drop_last = True
        self.num_samples = size // num_replicas
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self.epoch_seed: int | None = None  # the seed of the permutation being served
        self._seeded_epoch: int | None = None  # the epoch it belongs to
        self._resume: dict[str, Any] | None = None
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch seed, this rank's order): `batch_indices`'
        self.epoch_of: Callable[[], int] | None = None  # the Trainer's current epoch (`set_epoch`)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        # Lightning passes its count of processed epochs, which a run resumed from a checkpoint written at an
        # epoch's end holds one ahead of the epoch it trains next: the Trainer's current epoch, when known, is it
        self.epoch = self.epoch_of() if self.epoch_of is not None else epoch

    def __iter__(self) -> Iterator[int]:
        # a generator: like RandomSampler, nothing is drawn before the epoch's first batch is asked for
        skip = 0
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == self.epoch:
            self.epoch_seed, skip = resume["seed"], resume["samples"]
        elif self.seed is None:
            self.epoch_seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's draw
        else:
            self.epoch_seed = self.seed + self.epoch
        self._seeded_epoch = self.epoch
        generator = torch.Generator()
        generator.manual_seed(self.epoch_seed)
        order = torch.randperm(self.size, generator=generator)
        yield from order[self.rank : self.total_size : self.num_replicas][skip:].tolist()

    def batch_indices(self, batch_idx: int, batch_size: int) -> torch.Tensor:
        """The indices of batch `batch_idx` of the epoch being served (whole batches: the loader drops the last
        short one), recomputed from the epoch's seed: what the loader gathered, without asking it for more."""
        if self._seeded_epoch != self.epoch or self.epoch_seed is None:
            raise RuntimeError("batch_indices is known once the epoch's first batch has been drawn")
        if self._order is None or self._order[0] != self.epoch_seed:  # once per epoch
            generator = torch.Generator()
            generator.manual_seed(self.epoch_seed)
            order = torch.randperm(self.size, generator=generator)
            self._order = (self.epoch_seed, order[self.rank : self.total_size : self.num_replicas])
        return self._order[1][batch_idx * batch_size : (batch_idx + 1) * batch_size]

    def state(self, samples_done: int) -> dict[str, Any] | None:
        """Where this epoch stands after `samples_done` of this rank's samples; None outside an epoch."""
        if self._seeded_epoch != self.epoch or not 0 <= samples_done < self.num_samples:
            return None
        return {"epoch": self.epoch, "seed": self.epoch_seed, "samples": samples_done, "ranks": self.num_replicas}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue `state`'s epoch where it stopped, when that epoch is the next one iterated."""
        if state["ranks"] != self.num_replicas:
            raise UserError(
                f"the checkpoint stopped in the middle of epoch {state['epoch']} of a run on {state['ranks']} "
                f"process(es); resume it on {state['ranks']} (trainer.devices x trainer.num_nodes), or resume "
                f"from a checkpoint written at the end of an epoch to change the number of processes"
            )
        self._resume = state


class TrainOrder:
    """A DataModule's training order (a mixin of the image and latent DataModules): an `EpochSampler` built for the
    run, under DDP one permutation from rank 0's seed sharded by rank, whose place every checkpoint saves
    (`state_dict`) and a resumed run continues (`load_state_dict`), mid-epoch too."""

    #: draw each epoch's permutation from the run's seed and the epoch (as under DDP) even in one process, instead
    #: of from the global generator: the order is then a function of the seed alone, whatever else draws from the
    #: generators (the image DataModules keep the global draw: it is the published loops' `shuffle=True` order)
    seeded_order: bool = False
    batch_size: int
    folder: Any  # where the data lies, named in errors
    trainer: Any
    train_sampler: EpochSampler | None = None
    _resume_order: dict[str, Any] | None = None

    def shared_seed(self) -> int:
        """Lightning's seed (`seed_everything`, as its DistributedSampler uses), rank 0's under DDP."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        trainer = self.trainer
        return trainer.strategy.broadcast(seed) if trainer is not None and trainer.world_size > 1 else seed

    def training_sampler(self, size: int, what: str) -> EpochSampler:
        """This run's sampler of `size` training `what` (named in the error when a process gets under a batch),
        continuing a restored order."""
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            self.train_sampler = EpochSampler(size, trainer.world_size, trainer.global_rank, self.shared_seed())
        elif self.seeded_order:
            self.train_sampler = EpochSampler(size, seed=self.shared_seed())
        else:
            self.train_sampler = EpochSampler(size)
        if len(self.train_sampler) < self.batch_size:
            raise UserError(
                f"{self.folder} has {size} training {what}"
                + (f" ({len(self.train_sampler)} per process)" if self.train_sampler.num_replicas > 1 else "")
                + f", fewer than {DATA}batch_size={self.batch_size}"
            )
        if trainer is not None:
            self.train_sampler.epoch_of = lambda: trainer.current_epoch
        if self._resume_order is not None:
            self.train_sampler.resume(self._resume_order)
            self._resume_order = None
        return self.train_sampler

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: where the training epoch stands, when one is under way."""
        sampler, trainer = self.train_sampler, self.trainer
        if sampler is None or trainer is None:
            return {}
        # the Trainer's own count of training batches taken this epoch: the one it resumes its loop from
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        state = sampler.state(batches * self.batch_size)
        return {} if state is None else {"train_order": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_order = state_dict.get("train_order")
        if self._resume_order is not None:
            # Lightning warns that a mid-epoch resume replays the epoch's first batches unless the DataLoader is
            # stateful; here the sampler continues the order instead, so the warning would be wrong
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
