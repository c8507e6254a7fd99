"""Learning curves: per-step values at the loggers' rate, exact epoch means, the console's epoch line."""

from __future__ import annotations

import math
import re

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger

from gon_lightning.callbacks import EpochLog
from gon_lightning.data import MNISTDataModule
from gon_lightning.models import GON
from gon_lightning.models.base import per_image_sse


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))


class RecordingGON(GON):
    """Keeps every training step's loss, mean per-image SSE and batch size, and counts `self.log` calls."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps: list[tuple[int, float, float, int]] = []
        self.log_calls: list[str] = []

    def log_train(self, loss, x_hat, x) -> None:
        sse = per_image_sse(x_hat.detach(), x).mean()
        self.steps.append((self.current_epoch, loss.item(), sse.item(), len(x)))
        super().log_train(loss, x_hat, x)

    def log(self, name, *args, **kwargs) -> None:
        self.log_calls.append(name)
        super().log(name, *args, **kwargs)


def test_epoch_means_exact_and_per_step_values_only_at_logging_steps(mnist_root, capsys) -> None:
    pl.seed_everything(0)
    model = RecordingGON(nz=4, ngf=2)
    logger = RecordingLogger()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=0,
        log_every_n_steps=4,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[EpochLog()],
    )
    trainer.fit(model, MNISTDataModule(root=mnist_root, batch_size=16, download=False))

    # per-step values: a `self.log` call only at the 3 steps of 12 that reach the loggers (steps 4, 8, 12)
    assert model.log_calls.count("train/loss") == model.log_calls.count("train/sse") == 3
    per_step = [(step, m["train/sse"]) for step, m in logger.records if "train/sse" in m]
    assert [step for step, _ in per_step] == [3, 7, 11]
    for step, value in per_step:
        assert value == pytest.approx(model.steps[step][2], rel=1e-6)

    # epoch means over every image of the epoch, logged once per epoch, shown on the console and said so
    epoch_records = [m for _, m in logger.records if "train/sse_epoch" in m]
    assert len(epoch_records) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for epoch, (record, line) in enumerate(zip(epoch_records, lines, strict=True)):
        steps = [s for s in model.steps if s[0] == epoch]
        images = sum(n for *_, n in steps)
        loss = math.fsum(loss * n for _, loss, _, n in steps) / images
        sse = math.fsum(sse * n for _, _, sse, n in steps) / images
        assert record["train/loss_epoch"] == pytest.approx(loss, rel=1e-5)
        assert record["train/sse_epoch"] == pytest.approx(sse, rel=1e-5)
        shown = re.search(r"train/sse \(epoch mean\) (\S+)", line)
        assert shown and float(shown.group(1)) == pytest.approx(sse, rel=1e-3)
        assert "train/loss (epoch mean)" in line
    assert trainer.progress_bar_metrics.keys() >= {"train/loss_epoch", "train/sse_epoch"}


@pytest.mark.parametrize("model_name", ["GON", "VAE"])
def test_evaluation_metrics_logged_once_per_epoch_over_every_image(mnist_root, model_name) -> None:
    import gon_lightning.models

    class CountingLogs(getattr(gon_lightning.models, model_name)):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.log_calls: list[str] = []
            self.sse: list[torch.Tensor] = []

        def log(self, name, *args, **kwargs) -> None:
            self.log_calls.append(name)
            super().log(name, *args, **kwargs)

        def test_step(self, x, batch_idx):
            x_hat = super().test_step(x, batch_idx)
            self.sse.append(per_image_sse(x_hat, x))
            return x_hat

    pl.seed_everything(0)
    model = CountingLogs(nz=4, ngf=2)
    data = MNISTDataModule(root=mnist_root, batch_size=16, download=False)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
    (metrics,) = trainer.test(model, data, verbose=False)
    names = {"sse", "mse", "psnr"} | ({"elbo", "bpd"} if model_name == "VAE" else set())
    assert len(model.sse) > 1  # several batches, and yet one `self.log` call per metric
    assert sorted(model.log_calls) == sorted(f"test/{name}" for name in names)
    sse = torch.cat(model.sse)
    assert metrics["test/sse"] == pytest.approx(sse.mean().item(), rel=1e-5)  # every image weighs the same


def test_default_panel_schedule_keeps_drawing_within_its_time_share(monkeypatch) -> None:
    from types import SimpleNamespace

    from gon_lightning.callbacks import ImagePanels
    from gon_lightning.callbacks import images as images_module

    now = [0.0]
    monkeypatch.setattr(images_module.time, "perf_counter", lambda: now[0])
    panels = ImagePanels(max_time_share=0.01)
    panels._batch = object()
    drawn: list[int] = []

    def draw(trainer, module, tag) -> None:
        drawn.append(int(tag.removeprefix("epoch")))
        now[0] += 0.5  # half a second per drawing

    panels.draw = draw
    trainer = SimpleNamespace(should_stop=False, max_epochs=300, max_steps=-1, global_step=0, current_epoch=0)
    panels.on_train_start(trainer, None)
    for epoch in range(300):  # 1 s of training per epoch
        now[0] += 1.0
        trainer.current_epoch = epoch
        panels.on_train_epoch_end(trainer, None)
    # the first epoch, then whenever 1% of the training time covers one more drawing, and the last epoch
    # (tags number epochs from 0, as Lightning does: epoch 299 is the 300th)
    assert drawn == [0, 99, 149, 199, 249, 299]
    assert ImagePanels(every_n_epochs=3)._due(trainer, 3) and not ImagePanels(every_n_epochs=3)._due(trainer, 4)
    assert not ImagePanels(every_n_epochs=0)._due(trainer, 300)


def test_wandb_init_skips_the_launch_import_only_when_nothing_can_be_staged(monkeypatch) -> None:
    import sys

    from wandb.sdk import wandb_run

    from gon_lightning import runs

    calls: list[object] = []
    monkeypatch.setattr(wandb_run.Run, "_detect_and_apply_job_inputs", lambda run: calls.append(run))
    runs.skip_unstaged_launch_inputs()
    runs.skip_unstaged_launch_inputs()  # idempotent: wrapped once
    monkeypatch.delitem(sys.modules, "wandb.sdk.launch.inputs.internal", raising=False)
    wandb_run.Run._detect_and_apply_job_inputs("run")
    assert calls == []
    monkeypatch.setitem(sys.modules, "wandb.sdk.launch.inputs.internal", object())
    wandb_run.Run._detect_and_apply_job_inputs("run")
    assert calls == ["run"]


def test_wandb_log_imports_pandas_only_to_recognise_a_data_frame_that_can_exist(monkeypatch) -> None:
    import sys

    from wandb import util

    from gon_lightning import runs

    calls: list[object] = []
    monkeypatch.setattr(util, "is_pandas_data_frame", lambda value: calls.append(value) or True)
    runs.skip_pandas_import_for_media()
    runs.skip_pandas_import_for_media()  # idempotent: wrapped once
    monkeypatch.delitem(sys.modules, "pandas", raising=False)
    assert util.is_pandas_data_frame("image") is False
    assert calls == [] and "pandas" not in sys.modules
    monkeypatch.setitem(sys.modules, "pandas", object())
    assert util.is_pandas_data_frame("frame") is True
    assert calls == ["frame"]
