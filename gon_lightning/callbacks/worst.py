"""The test images a model reconstructs worst: where to look first when a test SSE disappoints."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gon_lightning.callbacks.images import enlarged
from gon_lightning.models.base import per_image_sse


class WorstReconstructions(Callback):
    """After `test`, the `num_images` test images with the largest reconstruction SSE, each beside its
    reconstruction: `worst_reconstructions.csv` (rank, test index, sse, image file) with the pairs as PNGs in
    `worst_reconstructions/`, under `dirpath` (default: the trainer's `default_root_dir`, the run folder under the
    CLI), and a sortable W&B table `test/worst_reconstructions`. Uses the reconstructions `test_step` returns (the
    ones the test metrics scored); a model returning none is skipped.

    Args:
        num_images: how many of the worst to keep (0 turns the callback off).
        dirpath: where the CSV and the PNGs go.
    """

    def __init__(self, num_images: int = 16, dirpath: str | Path | None = None) -> None:
        self.num_images = num_images
        self.dirpath = dirpath
        self._worst: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # sse, index, original, reconstruction
        self._seen = 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._worst, self._seen = None, 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.num_images or not isinstance(outputs, Tensor) or outputs.shape != batch.shape:
            return
        # kept on the device (no copy to the host per batch); only the worst few travel, at the end
        x, x_hat = batch.detach().float(), outputs.detach().float().clamp(0, 1)
        # the test loader is not shuffled: under DDP, rank r holds test images r, r + W, r + 2W, ...
        position = torch.arange(self._seen, self._seen + len(x), device=x.device)
        self._seen += len(x)
        candidates = (per_image_sse(x_hat, x), position * trainer.world_size + trainer.global_rank, x, x_hat)
        if self._worst is not None:
            candidates = tuple(torch.cat(pair) for pair in zip(self._worst, candidates, strict=True))
        self._worst = self._top(*candidates)

    def _top(self, sse: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        order = sse.argsort(descending=True)[: self.num_images]
        return (sse[order], *(t[order] for t in rest))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._worst is None or trainer.world_size == 1:
            return
        # every rank's worst to every rank (same shapes: pad with -inf SSE), then the worst of all
        pad = self.num_images - len(self._worst[0])
        padded = [torch.cat([t, t[:1].expand(pad, *t.shape[1:])]) for t in self._worst]
        padded[0][len(self._worst[0]) :] = -torch.inf
        gathered = [pl_module.all_gather(t).flatten(0, 1) for t in padded]
        self._worst = self._top(*gathered)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._worst is None or not trainer.is_global_zero:
            return
        sse, index, x, x_hat = (t.cpu() for t in self._worst)
        keep = sse.isfinite()
        sse, index, x, x_hat = sse[keep], index[keep], x[keep], x_hat[keep]
        root = Path(self.dirpath or trainer.default_root_dir)
        folder = root / "worst_reconstructions"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for rank, (error, i, original, reconstruction) in enumerate(zip(sse, index, x, x_hat, strict=True), 1):
            image = folder / f"rank{rank:02d}-test{int(i):05d}.png"
            save_image(torch.stack([original, reconstruction]), image, nrow=2, padding=1)
            relative = str(image.relative_to(root))
            rows.append({"rank": rank, "test_index": int(i), "sse": float(error), "image": relative})
        with (root / "worst_reconstructions.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["rank", "test_index", "sse", "image"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"worst reconstructions: {root / 'worst_reconstructions.csv'} (images in {folder})")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                def picture(image: Tensor) -> wandb.Image:
                    return wandb.Image(enlarged(make_grid(image[None], padding=0), 128).permute(1, 2, 0).numpy())

                data = [
                    [row["rank"], row["test_index"], row["sse"], picture(original), picture(reconstruction)]
                    for row, original, reconstruction in zip(rows, x, x_hat, strict=True)
                ]
                columns = ["rank", "test index", "sse", "original", "reconstruction"]
                logger.log_table("test/worst_reconstructions", columns=columns, data=data)
