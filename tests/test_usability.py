"""What a Lightning + W&B researcher expects of the CLI, the run folder and the package (tiny GONs, no network)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from cli_args import base_args, only_run

from gon_lightning.cli import main
from gon_lightning.runs import RUN_DIR_ENV, WANDB_ID_ENV, load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]


def tiny_fit(data_root: Path, runs: Path, *extra: str, logger: str | None = "false") -> list[str]:
    return base_args(data_root, runs, *extra, logger=logger)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (RUN_DIR_ENV, WANDB_ID_ENV, "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def umask_002():
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def test_checkpoints_respect_the_umask(mnist_root: Path, tmp_path: Path, umask_002):
    runs = tmp_path / "runs"
    main(tiny_fit(mnist_root, runs))
    checkpoints = list((only_run(runs) / "checkpoints").iterdir())
    assert {p.name for p in checkpoints} >= {"last.ckpt"} and len(checkpoints) == 2
    for path in checkpoints:  # group-writable like every other new file, not mkstemp's private 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path
    assert stat.S_IMODE((only_run(runs) / "config.yaml").stat().st_mode) == 0o664


def test_console_is_quiet_and_honest(mnist_root: Path, tmp_path: Path):
    # a fresh process, as a user runs it: Python's default warning filters, W&B (offline) not silenced
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "PYTHONWARNINGS")}
    args = tiny_fit(mnist_root, tmp_path / "runs", "--trainer.enable_model_summary=true", logger=None)
    result = subprocess.run(
        [sys.executable, "-m", "gon_lightning", *args], capture_output=True, text=True, env=env, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "decoder" in out and "Trainable params" in out  # the summary is printed ...
    for noise in ("FLOPs", "ModuleDict", "Tip:", "litlogger", "anonymous", "Warning", "warn", "deprecat"):
        assert noise not in out, noise  # ... without empty rows, advertising or deprecation warnings


def test_config_names_find_the_packaged_configs_from_any_directory(tmp_path: Path):
    assert not Path("configs").exists()  # the cwd is an empty folder
    for name, model, activation in (
        ("vgon_cifar", "VariationalGON", "elu"),
        ("configs/gon_mnist.yaml", "GON", "elu"),  # the repository's paths work outside a checkout too
        ("ablations/gon_relu_mnist", "GON", "relu"),
    ):
        cli = main([f"--config={name}", "--data.root", str(tmp_path)], run=False)
        assert type(cli.model).__name__ == model and cli.model.hparams.activation == activation, name
    with pytest.raises(SystemExit) as raised:
        main(["fit", "--config", "vgon_cifra"])
    assert "--config vgon_cifra: no such file, and no packaged config" in str(raised.value.code)
    assert "vgon_cifar" in str(raised.value.code) and "sweeps" not in str(raised.value.code)


@pytest.mark.parametrize("sweep", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_commands_parse(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """Every command line the W&B agent would run (wandb's own argument formatting) parses, values in place."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    config = yaml.safe_load(sweep.read_text())
    assert config["method"] == "grid" and config["metric"] == {"name": "val/sse", "goal": "minimize"}
    names = list(config["parameters"])
    grid = list(itertools.product(*(config["parameters"][name]["values"] for name in names)))
    assert len(grid) >= 2
    for values in grid:
        run = {"program": config["program"], "args": {n: {"value": v} for n, v in zip(names, values, strict=True)}}
        macros = {**create_sweep_command_args(run), "env": ["/usr/bin/env"], "program": [run["program"]]}
        command = []
        for part in create_sweep_command(list(config["command"])):  # as wandb's agent expands the macros
            command += macros[part[2:-1]] if part.startswith("${") else [part]
        assert command[:3] == ["/usr/bin/env", "gon-lightning", "fit"], command
        with pytest.raises(SystemExit) as exited:
            main([*command[2:], f"--data.root={tmp_path}", "--print_config"])
        assert exited.value.code in (0, None)
        resolved = yaml.safe_load(capsys.readouterr().out)
        for name, value in zip(names, values, strict=True):
            section, *keys = name.split(".")
            found = resolved[section]
            for key in keys:
                found = found[key]
            assert found == value, (name, found, value)
        assert resolved["trainer"]["max_epochs"] == 50 and resolved["model"]["class_path"].endswith(".GON")


def test_a_sweep_agents_run_id_is_the_runs_id(mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_RUN_ID", "sweeprun1")  # what `wandb agent` sets for each run it starts
    main(tiny_fit(mnist_root, tmp_path / "runs", logger="CSVLogger"))
    checkpoint = load_checkpoint_file(only_run(tmp_path / "runs") / "checkpoints" / "last.ckpt")
    assert checkpoint["gon_lightning"]["wandb_id"] == "sweeprun1"  # a resume continues the sweep's run


def readme_python_block(title: str) -> str:
    section = (REPO / "README.md").read_text().split(f"## {title}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_use_from_python_runs(tmp_path: Path):
    """The README's "Use from Python" code, run as written against tiny runs made the way it says."""
    small = ["--data.root=data", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    small += ["--trainer.limit_val_batches=1", "--trainer.logger=false", "--images.every_n_epochs=0"]
    main(["fit", "--config", "quickstart", "--model.init_args.nz=8", "--model.init_args.ngf=4", *small])
    main(
        [
            "fit",
            "--config",
            "implicit_gon_mnist",
            "--data",
            "MNIST5kDataModule",
            "--model.init_args.widths=[16]",
            *small,
        ]
    )
    namespace: dict = {}
    exec(compile(readme_python_block("Use from Python"), "README.md", "exec"), namespace)
    x, small_x = namespace["x"], namespace["small"]
    assert namespace["reconstructions"].shape == x.shape == (8, 1, 32, 32)
    assert namespace["samples"].shape == (16, 1, 32, 32)
    assert namespace["interpolations"].shape == (8, 4, 1, 32, 32)
    assert namespace["renders"].shape == (4, 1, 4 * 28, 4 * 28) and small_x.shape == (4, 1, 28, 28)
    for name in ("reconstructions", "samples", "interpolations", "superres"):
        assert Path(f"{name}.png").stat().st_size > 0


def test_default_run_keeps_a_csv_of_metrics_and_a_clean_wandb_run(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import wandb

    import gon_lightning.cli

    monkeypatch.setattr(gon_lightning.cli, "_finish_wandb", lambda: None)  # keep the run open to read it
    try:
        main(tiny_fit(mnist_root, tmp_path / "runs", "--trainer.max_epochs=2", logger=None))  # the default loggers
        run = wandb.run
        summary, config, tags, group = dict(run.summary._as_dict()), dict(run.config), run.tags, run.group
    finally:
        wandb.finish()
    folder = only_run(tmp_path / "runs")
    # metrics readable without W&B: a CSV in the run folder, one row per validation
    rows = list(csv.DictReader((folder / "logs" / "version_0" / "metrics.csv").open()))
    val_sse = [float(row["val/sse"]) for row in rows if row.get("val/sse")]
    assert len(val_sse) == 2
    # the summary keeps the best val/sse beside the last, and the best checkpoint with its score
    assert summary["val/sse"] == {"min": pytest.approx(min(val_sse)), "last": pytest.approx(val_sse[-1])}
    best = Path(summary["best/checkpoint"])
    assert best.parent == folder / "checkpoints" and best.is_file()
    assert summary["best/val_sse"] == pytest.approx(min(val_sse))
    # dashboards can filter by model and data
    assert group == "gon-mnist" and set(tags) == {"gon", "mnist"}
    # the config once, nested, without nulls or LightningCLI internals
    assert set(config) == {"config", "run_dir"}, sorted(config)
    assert config["config"]["model"]["init_args"]["nz"] == 8

    def nulls(tree: object) -> bool:
        if isinstance(tree, dict):
            return any(value is None or nulls(value) for value in tree.values())
        return isinstance(tree, list) and any(nulls(item) for item in tree)

    assert not nulls(config["config"]) and "_instantiator" not in str(config)


def test_default_root_dir_is_where_run_folders_go(mnist_root: Path, tmp_path: Path):
    args = [arg for arg in tiny_fit(mnist_root, tmp_path / "runs") if not arg.startswith("--runs_root")]
    main([*args, f"--trainer.default_root_dir={tmp_path / 'mine'}"])
    run = only_run(tmp_path / "mine")
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit) as raised:  # two different answers to one question
        main([*tiny_fit(mnist_root, tmp_path / "runs"), f"--trainer.default_root_dir={tmp_path / 'other'}"])
    assert "--trainer.default_root_dir" in str(raised.value.code) and "--runs_root" in str(raised.value.code)
    assert not (tmp_path / "other").exists() and not (tmp_path / "runs").exists()


def test_fit_ends_saying_what_next_and_its_commands_work(mnist_root: Path, tmp_path: Path, capsys):
    main(tiny_fit(mnist_root, tmp_path / "runs"))
    out = capsys.readouterr().out
    folder = only_run(tmp_path / "runs")
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
    (best,) = (folder / "checkpoints").glob("epoch*.ckpt")
    assert lines["best val/sse"].endswith(str(best)) and lines["images"] == str(folder / "images")
    test, train_on = shlex.split(lines["test it"]), shlex.split(lines["train on"])
    assert test[:2] == ["gon-lightning", "test"] and test[-1] == str(best)
    assert train_on[-2:] == ["--trainer.max_epochs", "2"]  # training finished: train on means more epochs
    main(test[1:])  # the commands run as printed
    assert json.loads((folder / "test_metrics.json").read_text())["checkpoint"] == str(best)
    main(train_on[1:])
    assert load_checkpoint_file(folder / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert only_run(tmp_path / "runs") == folder  # the same run went on


def read_png(path: Path) -> torch.Tensor:
    return torchvision.io.decode_png(torchvision.io.read_file(str(path)))


def test_one_epoch_numbering_and_readable_panels_of_that_epochs_gaussian(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from pytorch_lightning.loggers import WandbLogger

    from gon_lightning.callbacks import ImagePanels

    logged, gaussians = [], []
    log_image = WandbLogger.log_image

    def log_image_spy(self, key, images, **kw):
        logged.append((key, images, kw))
        return log_image(self, key, images, **kw)

    monkeypatch.setattr(WandbLogger, "log_image", log_image_spy)
    draw = ImagePanels.draw

    def spy(self, trainer, model, tag):  # the Gaussian the samples are drawn from, and this epoch's latents
        gaussians.append((model.latent_mean.clone(), (model.latent_sum / model.latent_count).float()))
        return draw(self, trainer, model, tag)

    monkeypatch.setattr(ImagePanels, "draw", spy)
    main(tiny_fit(mnist_root, tmp_path / "runs", "--trainer.max_epochs=2", logger=None))
    folder = only_run(tmp_path / "runs")
    # epochs numbered from 0 everywhere, as Lightning does: the second (last) epoch is epoch 1
    assert "epoch 1/1 step 4" in capsys.readouterr().out
    assert {p.name.split("-")[0] for p in (folder / "checkpoints").glob("epoch*")} == {"epoch0001"}
    assert {p.stem.rsplit("-", 1)[1] for p in (folder / "images").glob("*.png")} == {"epoch0000", "epoch0001"}
    captions = {kw["caption"][0] for key, _, kw in logged if kw["step"] == 4}
    assert captions and all(caption.startswith("epoch 1: ") for caption in captions)
    # captions say what the rows are; panels are enlarged (nearest) to a readable size
    (recon,) = [(images[0], kw) for key, images, kw in logged if key == "images/reconstructions" and kw["step"] == 4]
    assert "originals" in recon[1]["caption"][0] and "reconstructions" in recon[1]["caption"][0]
    saved = read_png(folder / "images" / "reconstructions-epoch0001.png")
    factor = recon[0].shape[1] // saved.shape[-1]
    assert recon[0].shape[1] >= 512 and factor >= 2
    assert (torch.from_numpy(recon[0][::factor, ::factor, 0]) == saved[0]).all()  # nearest: pixels repeated
    # each epoch's samples come from that epoch's Gaussian (fitted before callbacks and checkpoints see it)
    assert len(gaussians) == 2
    for fitted, this_epoch in gaussians:
        assert torch.allclose(fitted.float(), this_epoch, atol=1e-6)
    last = load_checkpoint_file(folder / "checkpoints" / "last.ckpt")["state_dict"]
    assert torch.allclose(last["latent_mean"], last["latent_sum"] / last["latent_count"])


def test_test_lists_the_worst_reconstructions(mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pytorch_lightning.loggers import WandbLogger

    tables = []
    record = lambda _, key, columns, data, **kw: tables.append((key, columns, data))  # noqa: E731
    monkeypatch.setattr(WandbLogger, "log_table", record)
    main(tiny_fit(mnist_root, tmp_path / "runs"))
    folder = only_run(tmp_path / "runs")
    args = ["test", f"--config={folder / 'config.yaml'}", f"--ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"]
    main([*args, "--trainer.logger+=WandbLogger", "--trainer.limit_test_batches=2"])
    rows = list(csv.DictReader((folder / "worst_reconstructions.csv").open()))
    sse = [float(row["sse"]) for row in rows]
    assert len(rows) == 16 and sse == sorted(sse, reverse=True)  # worst first, of the 32 test images seen
    assert len({row["test_index"] for row in rows}) == 16 and all(0 <= int(row["test_index"]) < 32 for row in rows)
    mean = json.loads((folder / "test_metrics.json").read_text())["metrics"]["test/sse"]
    assert sse[0] >= mean  # the worst is at least the mean
    for row in rows:  # original beside reconstruction
        image = read_png(folder / row["image"])
        assert image.shape[-1] == 2 * 32 + 3 and image.shape[-2] == 32 + 2
    ((key, columns, data),) = tables
    assert key == "test/worst_reconstructions" and columns[:3] == ["rank", "test index", "sse"] and len(data) == 16


def test_a_list_of_loggers_is_taken_as_given(mnist_root: Path, tmp_path: Path):
    main(tiny_fit(mnist_root, tmp_path / "runs", logger="[WandbLogger]"))
    folder = only_run(tmp_path / "runs")
    assert (folder / "wandb").is_dir() and not (folder / "logs").exists()


@pytest.mark.slow
def test_worst_reconstructions_under_ddp_are_those_of_one_process(mnist_root: Path, tmp_path: Path):
    # no BatchNorm and a summed inner loss: each image's reconstruction is independent of its batch
    independent = ("--model.init_args.norm=none", "--model.init_args.inner_reduction=sum")
    main(tiny_fit(mnist_root, tmp_path / "runs", *independent))
    folder = only_run(tmp_path / "runs")
    test = ["test", f"--config={folder / 'config.yaml'}", f"--ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"]
    main(test)
    single = list(csv.DictReader((folder / "worst_reconstructions.csv").open()))
    # a fresh launch: no run of ours, and no process-group variables an earlier in-process DDP run left behind
    # (with LOCAL_RANK set, Lightning takes the ranks as launched elsewhere and waits for the second forever)
    ddp_env = ("LOCAL_RANK", "RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in (RUN_DIR_ENV, WANDB_ID_ENV, *ddp_env)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    ddp_args = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.enable_progress_bar=false"]
    result = subprocess.run(
        [sys.executable, "-m", "gon_lightning", *test, *ddp_args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = list(csv.DictReader((folder / "worst_reconstructions.csv").open()))
    assert [row["test_index"] for row in ddp] == [row["test_index"] for row in single]  # both ranks' images, merged
    assert [float(row["sse"]) for row in ddp] == pytest.approx([float(row["sse"]) for row in single], rel=1e-4)
