"""Image panels: reconstructions, samples, spherical interpolations and super-resolution renders.

A model implements what it can of the generation interface (`ImageModel`); a method raising
NotImplementedError only means that panel is skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gon_lightning.callbacks.checkpointing import run_survivors
from gon_lightning.callbacks.schedule import TimeShareSchedule
from gon_lightning.errors import positive_ints, writing
from gon_lightning.models.base import check_sampler_option

PANELS = ("reconstructions", "samples", "interpolations", "superres")


def _try(make: Callable[[], Tensor]) -> Tensor | None:
    try:
        return make()
    except NotImplementedError:
        return None


def _as_images(x: Tensor) -> Tensor:
    return x.detach().float().clamp(0, 1).cpu()


def _nearest(x: Tensor, size: int) -> Tensor:
    return torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")


MAX_SIDE = 1024  # px: a larger panel is scrolled and shrunk by viewers rather than read


def _fit(wanted: int, fits: int, what: str, side: int, max_side: int) -> int:
    """`wanted` images, or the `fits` a panel within `max_side` px holds (at least 1), saying so when fewer."""
    kept = min(wanted, max(1, fits))
    if kept < wanted:
        rank_zero_warn(f"image panels keep within {max_side} px a side: {kept} of {wanted} {what} at {side} px")
    return kept


@torch.no_grad()
def make_panels(
    model: Any,
    x: Tensor,
    n_samples: int = 16,
    interpolation_steps: int = 8,
    render_size: int | None = None,
    max_side: int = MAX_SIDE,
    sampler: str | None = None,
) -> dict[str, Tensor]:
    """Image grids (C, H, W) in [0, 1] for what `model` supports, from a batch `x` of originals; the samples are
    drawn by `sampler` (one of `model.samplers`; None: the model's default).

    Super-resolution renders are `render_size` px a side, by default twice the originals'.
    Each panel stays within `max_side` pixels a side (plus the 1 px padding): at large images it shows fewer of
    them (with a warning) and wraps rows sooner; at 32 to 128 px the default panels fit whole.
    Random draws happen inside a forked RNG, so drawing panels never changes the training run.
    """
    x = x.to(model.device)
    side = x.shape[-1]
    per_side = max_side // side  # images a panel's row (or column) holds
    grids: dict[str, Tensor] = {}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), model.evaluation_protocol():
        cols = min(len(x), 8, max(1, per_side))
        x_recon = x[: _fit(len(x), cols * (per_side // 2), "reconstructions", side, max_side)]
        recon = _try(lambda: model.reconstruct(x_recon))
        if recon is not None:  # originals and reconstructions on alternate rows
            n = len(x_recon)
            rows = math.ceil(n / cols)
            pairs = []
            for r in range(rows):
                pairs += [x_recon[r * cols : (r + 1) * cols], recon[r * cols : (r + 1) * cols]]
            grids["reconstructions"] = make_grid(_as_images(torch.cat(pairs)), nrow=cols, padding=1)
        cols = min(math.ceil(math.sqrt(n_samples)), max(1, per_side))
        n = _fit(n_samples, cols * per_side, "samples", side, max_side)
        samples = _try(lambda: model.sample(n, sampler))
        if samples is not None:
            grids["samples"] = make_grid(_as_images(samples), nrow=min(cols, math.ceil(math.sqrt(n))), padding=1)
        if len(x) >= 2:
            half = min(len(x) // 2, 4, max(1, per_side))
            steps = _fit(interpolation_steps, max(2, per_side), "interpolation steps", side, max_side)
            interp = _try(lambda: model.interpolate(x[:half], x[half : 2 * half], steps))
            if interp is not None:  # (steps, B, C, H, W): one row per pair
                rows = interp.transpose(0, 1).flatten(0, 1)
                grids["interpolations"] = make_grid(_as_images(rows), nrow=steps, padding=1)
        render = getattr(model, "render", None)
        if callable(render):
            render_size = render_size or 2 * side
            k = min(len(x), 4, max(1, max_side // render_size))
            sr = _try(lambda: render(model.encode_images(x[:k]), render_size))
            if sr is not None:  # originals blown up (nearest) above the renders at render_size
                pair = torch.cat([_nearest(_as_images(x[:k]), render_size), _as_images(sr)])
                grids["superres"] = make_grid(pair, nrow=k, padding=1)
    return grids


# what a panel's rows are, for the W&B caption
CAPTIONS = {
    "reconstructions": "rows alternate: originals, then their reconstructions",
    "samples": "new samples",
    "interpolations": "each row: the spherical interpolation between two images' latents, endpoints included",
    "superres": "top: originals enlarged (nearest); bottom: the model's renders of them at that size",
}
WANDB_MIN_WIDTH = 512  # dashboards show a 32 px panel as a smudge: enlarge (nearest) to at least this width


def enlarged(grid: Tensor, min_width: int = WANDB_MIN_WIDTH) -> Tensor:
    """The grid blown up by a whole factor (nearest: every pixel a crisp square) to at least `min_width`."""
    factor = max(1, math.ceil(min_width / grid.shape[-1]))
    return grid.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def log_panels(trainer: pl.Trainer, grids: dict[str, Tensor], prefix: str = "images") -> None:
    """Send grids to the active loggers: W&B images (enlarged, captioned), TensorBoard images; others (CSV) keep
    only the files."""
    step = trainer.global_step
    for logger in trainer.loggers:
        for name, grid in grids.items():
            key = f"{prefix}/{name}"
            if isinstance(logger, WandbLogger):
                array = (enlarged(grid).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                caption = f"epoch {trainer.current_epoch}: {CAPTIONS.get(name, name)}"
                logger.log_image(key, images=[array], step=step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, grid, global_step=step)


class ImagePanels(TimeShareSchedule):
    """After training epochs, draw panels from a fixed batch and save them under `dirpath` and to the logger.

    Args:
        every_n_epochs: draw after every N-th training epoch (0 disables the callback). None (the default) keeps
            panels within a time budget: after the first epoch and the last one, and in between whenever the
            time spent drawing stays within `max_time_share` of the training time so far (panels cost a few
            hundred milliseconds on a CPU, a large share of an epoch that a GPU trains in a second).
        max_time_share: the budget of the default schedule, as a share of the training time.
        num_images: originals in the reconstruction panel (taken from the first validation batch).
        num_samples: images in the sample panel.
        interpolation_steps: images per interpolation row.
        render_size: side of the super-resolution renders (models with `render(z, size)` only); None: twice the
            side of the images.
        max_side: most pixels a side of a panel (`make_panels`): at large images the panels show fewer (the
            default fits the default panels whole up to 128 px; at 256 px they keep 8 reconstructions and 4
            interpolation steps), with a warning.
        sampler: how the sample panel draws: one of the model's samplers (`gaussian`, `gmm`, `prior`, ...: the
            model's `samplers`); None: the model's default. `gmm` (and the autoencoders' `gaussian`) is refitted
            to the training latents at each panel after the weights changed: seconds (docs/gon_family.md, "Samplers").
        dirpath: where the PNGs go; the CLI sets it to `<run>/images`.
        log_to_logger: also send the grids to the logger.
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        max_time_share: float = 0.01,
        num_images: int = 16,
        num_samples: int = 16,
        interpolation_steps: int = 8,
        render_size: int | None = None,
        max_side: int = MAX_SIDE,
        sampler: str | None = None,
        dirpath: str | None = None,
        log_to_logger: bool = True,
    ) -> None:
        super().__init__(every_n_epochs, max_time_share, "images.")
        positive_ints(
            "images.",
            num_images=num_images,
            num_samples=num_samples,
            interpolation_steps=interpolation_steps,
            max_side=max_side,
            **({} if render_size is None else {"render_size": render_size}),
        )
        self.num_images = num_images
        self.num_samples = num_samples
        self.interpolation_steps = interpolation_steps
        self.render_size = render_size
        self.max_side = max_side
        self.sampler = sampler
        self.dirpath = dirpath
        self.log_to_logger = log_to_logger
        self._batch: Tensor | None = None
        self._failed: set[str] = set()

    def _keep(self, batch: Any) -> None:
        if self._batch is None and isinstance(batch, Tensor):
            self._batch = batch[: self.num_images].detach().clone()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking:
            self._batch = None  # prefer a validation batch: the same images every time
            self._keep(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self._keep(batch)  # fallback when there is no validation

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sampler_option("images.sampler", pl_module, self.sampler)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self._batch is not None and self._due(trainer, epoch):
            start = time.perf_counter()
            self.draw(trainer, pl_module, f"epoch{trainer.current_epoch:04d}")  # numbered as Lightning does
            self._spent(time.perf_counter() - start)

    @rank_zero_only
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str) -> dict[str, Path]:
        was_training = pl_module.training
        pl_module.eval()
        try:
            grids = make_panels(
                pl_module,
                self._batch,
                self.num_samples,
                self.interpolation_steps,
                self.render_size,
                self.max_side,
                self.sampler,
            )
        finally:
            pl_module.train(was_training)
        dirpath = Path(self.dirpath or Path(trainer.default_root_dir) / "images")
        written = {}
        with writing(f"the image panels of {tag}", dirpath, lambda: run_survivors(trainer)):
            dirpath.mkdir(parents=True, exist_ok=True)
            for name, grid in grids.items():
                written[name] = dirpath / f"{name}-{tag}.png"
                save_image(grid, written[name])
        if self.log_to_logger:
            try:
                log_panels(trainer, grids)
            except Exception as error:  # a logger hiccup must not end a training run
                rank_zero_warn(f"could not send image panels to the logger: {error}")
        return written


class PredictionWriter(BasePredictionWriter):
    """`predict` outputs: per batch a grid of originals over reconstructions, all latents in one `latents.pt`,
    and once samples, interpolations and super-resolution renders where the model supports them.

    Args:
        output_dir: where files go; the CLI sets it to `<run>/predictions`.
        num_samples: images generated (models that sample).
        interpolation_steps: images per interpolation row.
        render_size: side of the super-resolution renders (models with `render(z, size)` only); None: twice the
            side of the images.
        max_side: most pixels a side of the sample, interpolation and super-resolution panels, and of a row of
            the per-batch reconstruction grids (which keep every image and wrap).
        sampler: how the samples are drawn: one of the model's samplers (`gaussian`, `gmm`, `prior`, ...: the
            model's `samplers`); None: the model's default.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        num_samples: int = 64,
        interpolation_steps: int = 8,
        render_size: int | None = None,
        max_side: int = MAX_SIDE,
        sampler: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        positive_ints(
            "predictions.",
            num_samples=num_samples,
            interpolation_steps=interpolation_steps,
            max_side=max_side,
            **({} if render_size is None else {"render_size": render_size}),
        )
        self.output_dir = output_dir
        self.num_samples = num_samples
        self.interpolation_steps = interpolation_steps
        self.render_size = render_size
        self.max_side = max_side
        self.sampler = sampler
        self._latents: list[Tensor] = []
        self._no_latents = False

    def _dir(self, trainer: pl.Trainer) -> Path:
        path = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sampler_option("predictions.sampler", pl_module, self.sampler)

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._latents, self._no_latents = [], False

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        out = self._dir(trainer)
        with pl_module.evaluation_protocol():
            if not self._no_latents:
                z = _try(lambda: pl_module.encode_images(batch))
                if z is None:
                    self._no_latents = True
                else:
                    self._latents.append(z.detach().cpu())
        if isinstance(prediction, Tensor) and prediction.shape == batch.shape:
            pairs = torch.stack([batch, prediction], 1).flatten(0, 1)  # original, reconstruction, ...
            nrow = max(2, min(16, self.max_side // batch.shape[-1]) // 2 * 2)  # whole pairs on a row
            save_image(_as_images(pairs), out / f"reconstructions-{batch_idx:04d}.png", nrow=nrow, padding=1)
        if batch_idx == 0:
            grids = make_panels(
                pl_module,
                batch[:16],
                self.num_samples,
                self.interpolation_steps,
                self.render_size,
                self.max_side,
                self.sampler,
            )
            for name, grid in grids.items():
                if name != "reconstructions":
                    save_image(grid, out / f"{name}.png")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._latents:
            torch.save(torch.cat(self._latents), self._dir(trainer) / "latents.pt")
        self._latents = []
