"""The online linear probe: labels aligned with each training batch, the run's weights untouched, probe/acc logged."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from gon_lightning.callbacks import OnlineLinearProbe
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from tests.cli_args import base_args, only_run

PROBE = "--trainer.callbacks+=OnlineLinearProbe"


class CheckBatchIndices(Callback):
    """The images the DataModule says batch k holds are the images batch k held: its labels are theirs."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        datamodule = trainer.datamodule
        indices = datamodule.train_batch_indices(batch_idx)
        images = datamodule.datasets["train"].__getitems__(indices.tolist()).float().div(255)
        assert torch.equal(images, batch)
        # counted in the environment: the CLI imports this class by its path, which may be another module object
        os.environ["BATCHES_CHECKED"] = str(int(os.environ.get("BATCHES_CHECKED", 0)) + 1)


class SaveProbeHead(Callback):
    """Save the probe's head weights as the fit starts (after the probe built it), to PROBE_HEAD_FILE."""

    def on_fit_start(self, trainer, pl_module):
        (probe,) = [c for c in trainer.callbacks if isinstance(c, OnlineLinearProbe)]
        torch.save(probe.head[1].weight.detach().clone(), os.environ["PROBE_HEAD_FILE"])


def fit(data: Path, runs: Path, *extra: str) -> Path:
    main([*base_args(data, runs, "--trainer.limit_train_batches=3", "--data.init_args.val_fraction=0.25", *extra)])
    return only_run(runs)


def test_the_probe_leaves_the_run_as_it_was_and_logs_its_accuracy(_mnist_files: Path, tmp_path: Path):
    data = Path(shutil.copytree(_mnist_files, tmp_path / "data"))
    plain = fit(data, tmp_path / "plain")
    probed = fit(data, tmp_path / "probed", PROBE, "--trainer.callbacks+=tests.test_probe.CheckBatchIndices")
    assert os.environ["BATCHES_CHECKED"] == "3"
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (plain, probed)]
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    assert all(torch.equal(weights[0]["state_dict"][k], weights[1]["state_dict"][k]) for k in weights[0]["state_dict"])
    head = next(v for k, v in weights[1]["callbacks"].items() if k.startswith("OnlineLinearProbe"))
    assert head["head"]["1.weight"].shape == (10, 8)  # saved for a resumed run to go on from
    with open(probed / "logs" / "version_0" / "metrics.csv") as file:
        (rows,) = [r for r in csv.DictReader(file) if r.get("probe/acc")]
    assert 0 <= float(rows["probe/acc"]) <= 1 and 0 <= float(rows["probe/train_acc"]) <= 1

    # resumed, the head goes on from the checkpoint's (a fresh head would start from its seed's weights)
    os.environ["PROBE_HEAD_FILE"] = str(tmp_path / "head.pt")
    resume = ["--config", str(probed / "config.yaml"), "--ckpt_path", str(probed / "checkpoints" / "last.ckpt")]
    main(["fit", *resume, "--trainer.max_epochs=2", "--trainer.callbacks+=tests.test_probe.SaveProbeHead"])
    assert torch.equal(torch.load(tmp_path / "head.pt"), head["head"]["1.weight"])


def test_the_probe_refuses_a_model_without_latents_or_labels(tmp_path: Path):
    from gon_lightning.models import GenerativeOptimizationNetwork

    probe = OnlineLinearProbe()

    class Trainer:
        datamodule = None

    with pytest.raises(UserError, match="GenerativeOptimizationNetwork has none"):
        probe.setup(Trainer(), GenerativeOptimizationNetwork(image_shape=(1, 32, 32)), "fit")
    with pytest.raises(UserError, match=r"probe\.lr must be positive"):
        OnlineLinearProbe(lr=0)
