"""A checkpoint's latents as a dataset: any LightningModule trains on them with the same CLI, loggers and
checkpoints (a learned prior, a classifier).

`folder` reads an encoded folder (`gon_lightning.latents.store`, written by `gon-lightning encode`); `ckpt_path`
encodes the checkpoint's own dataset (its run's config.yaml) once, into `<run>/latents/<ckpt stem>-<sha256[:12]>/`
beside its checkpoints, and reads that (reused while the checkpoint file is the same: the name holds its hash).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gon_lightning.data.base import keep_batch
from gon_lightning.data.sampler import EpochSampler, TrainOrder
from gon_lightning.errors import DATA, UserError, positive_int
from gon_lightning.latents import store


class LatentSet(Dataset):
    """A split's latents (and labels) served a batch at a time, as {"latents": (B, nz), "labels": (B,)}."""

    def __init__(self, latents: Tensor, labels: Tensor | None = None) -> None:
        self.latents, self.labels = latents, labels

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices)  # one gather per batch, not B lookups and a collate
        batch = {"latents": self.latents[index]}
        if self.labels is not None:
            batch["labels"] = self.labels[index]
        return batch


def cache_folder(ckpt_path: Path) -> Path:
    """Where `ckpt_path`'s own dataset is encoded: `<run>/latents/<ckpt stem>-<sha256[:12]>`."""
    from gon_lightning.latents.encoding import run_config_of, sha256_of

    run_dir = run_config_of(ckpt_path).parent
    return run_dir / "latents" / f"{ckpt_path.stem}-{sha256_of(ckpt_path)[:12]}"


class LatentDataModule(TrainOrder, pl.LightningDataModule):
    """The latents of a checkpoint's dataset, with their labels where the dataset has them.

    Batches are dicts: {"latents": (B, nz) float32, "labels": (B,) int64} ("labels" only where the dataset has
    them). The training split is shuffled by a permutation per epoch seeded with the run's seed and the epoch
    (`data/sampler.py`; sharded by rank under DDP, so DDP's global batch is one process's batch, and continued
    exactly by a resumed run, at an epoch's start too, whatever else drew from the generators); validation reads
    the encoded `val` split, or `test` where there is none.

    Args:
        folder: an encoded folder (`gon-lightning encode --out FOLDER`).
        ckpt_path: a model checkpoint inside its run folder instead: its run's dataset is encoded once (on one
            process, by `prepare_data`) into the run's `latents/` folder, and read from there afterwards.
        batch_size: latents per batch (per process under DDP).
        num_workers: DataLoader worker processes (0: batches are gathered in the main process, usually fastest).
    """

    seeded_order = True

    def __init__(
        self, folder: str | None = None, ckpt_path: str | None = None, batch_size: int = 256, num_workers: int = 0
    ) -> None:
        super().__init__()
        if (folder is None) == (ckpt_path is None):
            raise UserError(f"LatentDataModule needs exactly one of {DATA}folder and {DATA}ckpt_path")
        positive_int(DATA + "batch_size", batch_size)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"{DATA}num_workers must be >= 0, got {num_workers!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.ckpt_path = Path(ckpt_path).expanduser() if ckpt_path is not None else None
        if self.ckpt_path is not None:
            if not self.ckpt_path.is_file():
                raise UserError(f"{DATA}ckpt_path {self.ckpt_path}: no such checkpoint file")
            self.folder = cache_folder(self.ckpt_path)
            self.nz = _checkpoint_nz(self.ckpt_path)
        else:
            self.folder = Path(folder).expanduser()
            self.nz = int(store.read_card(self.folder)["model"]["nz"])  # known before setup: the CLI links it
        self.card: dict[str, Any] = {}
        self.datasets: dict[str, LatentSet] = {}

    @property
    def dims(self) -> tuple[int]:
        return (self.nz,)

    def prepare_data(self) -> None:
        if self.ckpt_path is None or (self.folder / store.CARD).is_file():
            return
        from gon_lightning.latents.encoding import encode_checkpoint

        device = self.trainer.strategy.root_device if self.trainer is not None else None
        encode_checkpoint(
            self.ckpt_path, self.folder, device=device, command=f"LatentDataModule(ckpt_path={self.ckpt_path})"
        )
        rank_zero_info(f"Encoded the latents of {self.ckpt_path} into {self.folder}")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.ckpt_path is not None and not (self.folder / store.CARD).is_file():
            self.prepare_data()  # used without a Trainer (or its prepare_data did not run here)
        self.card = store.read_card(self.folder)
        for split in self.card["splits"]:
            data = store.read_split(self.folder, split)
            self.datasets[split] = LatentSet(data["latents"], data.get("labels"))
        self.nz = int(self.card["model"]["nz"])

    def latents(self, split: str) -> Tensor:
        """All of a split's latents (N, nz) float32, e.g. for standardisation statistics."""
        if not self.datasets:
            self.setup()
        if split not in self.datasets:
            raise UserError(f"{self.folder} holds no {split!r} split (it holds {', '.join(self.datasets)})")
        return self.datasets[split].latents

    def _loader(self, split: str, sampler: EpochSampler | None = None) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,  # every training step (and every rank's) a whole batch
            num_workers=self.num_workers,
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader("train", self.training_sampler(len(self.datasets["train"]), "latents"))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val" if "val" in self.datasets else "test")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _checkpoint_nz(path: Path) -> int:
    """The latent size a checkpoint's model was built with (its saved hyperparameters), read without its weights."""
    from gon_lightning.runs import load_checkpoint_file

    checkpoint = load_checkpoint_file(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if "nz" not in hparams:
        model = (checkpoint.get("gon_lightning") or {}).get("model") or "a model"
        raise UserError(f"{DATA}ckpt_path {path} holds {model}, which has no latents: nothing to encode")
    return int(hparams["nz"])
