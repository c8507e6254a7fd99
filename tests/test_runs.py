"""Run folders, W&B offline logging, exact resume, interruption, checkpoint safety and outputs (tiny GONs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_args import base_args, only_run

from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.runs import RUN_DIR_ENV, WANDB_ID_ENV, load_checkpoint_file, new_run_dir

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def error_of(args: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        main(args)
    message = str(raised.value.code)
    assert message.startswith("gon-lightning: error:"), message
    return message


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in (RUN_DIR_ENV, WANDB_ID_ENV, "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def trained(_mnist_files: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny finished CSV-logged run, shared by the tests that only read its checkpoint: (data root, run)."""
    root = tmp_path_factory.mktemp("trained")
    data = Path(shutil.copytree(_mnist_files, root / "data"))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(base_args(data, root / "runs"))
    finally:
        os.chdir(cwd)
        os.environ.pop(RUN_DIR_ENV, None)
        os.environ.pop(WANDB_ID_ENV, None)
    return data, only_run(root / "runs")


@pytest.mark.slow
def test_offline_wandb_run_folder_holds_config_checkpoints_metrics_images(mnist_root: Path, tmp_path: Path):
    import wandb

    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs, logger=None))
    assert wandb.run is None  # the CLI closes its W&B run
    run = only_run(runs)
    assert run.name.startswith("gon-mnist-")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["logger"]["class_path"].endswith("WandbLogger")
    assert config["ckpt_path"] is None and config["checkpoint"]["dirpath"] is None  # no run-specific paths saved
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch0000-val_sse") for name in checkpoints)
    assert {p.name.split("-")[0] for p in (run / "images").glob("*.png")} >= {"reconstructions", "interpolations"}
    (offline,) = (run / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    data = records.read_bytes()
    for key in (b"train/sse", b"val/sse", b"images/reconstructions", b"run_dir"):  # metrics, images, config
        assert key in data
    assert (offline / "files" / "requirements.txt").is_file()  # the packages that trained it
    info = load_checkpoint_file(run / "checkpoints" / "last.ckpt")["gon_lightning"]  # weights_only=True
    assert offline.name.endswith(info["wandb_id"]) and Path(info["run_dir"]) == run


def test_csv_logger_one_flag_away(trained):
    _, run = trained
    assert "val/sse" in (run / "logs" / "version_0" / "metrics.csv").read_text()
    assert not (run / "wandb").exists()


@pytest.mark.equality
@pytest.mark.slow
def test_resume_continues_the_run_exactly(mnist_root: Path, tmp_path: Path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(base_args(mnist_root, straight, "--trainer.max_epochs=2"))
    main(base_args(mnist_root, split))
    run = only_run(split)
    last = run / "checkpoints" / "last.ckpt"
    first_id = load_checkpoint_file(last)["gon_lightning"]["wandb_id"]
    cli = main(["fit", f"--config={run / 'config.yaml'}", f"--ckpt_path={last}", "--trainer.max_epochs=2"])
    assert cli.run_dir == run and cli.wandb_id == first_id and only_run(split) == run  # same folder, same W&B id
    resumed = load_checkpoint_file(last)
    reference = load_checkpoint_file(only_run(straight) / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 4
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_missing_checkpoint_is_an_error_naming_it(mnist_root: Path, tmp_path: Path):
    message = error_of(base_args(mnist_root, tmp_path / "runs", "--ckpt_path=nowhere/last.ckpt"))
    assert "nowhere/last.ckpt" in message
    message = error_of(base_args(mnist_root, tmp_path / "runs", "--ckpt_path=last"))
    assert "gon-mnist-*/checkpoints/last.ckpt" in message


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(trained, tmp_path: Path):
    data, run = trained
    good = (run / "checkpoints" / "last.ckpt").read_bytes()
    cases = {
        "truncated.ckpt": good[: len(good) // 2],
        "garbage.ckpt": os.urandom(4096),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    for name, expected in [
        ("truncated.ckpt", "corrupt"),
        ("garbage.ckpt", "corrupt"),
        ("foreign.ckpt", "not a Lightning checkpoint"),
    ]:
        message = error_of(base_args(data, tmp_path / "runs", f"--ckpt_path={tmp_path / name}"))
        assert str(tmp_path / name) in message and expected in message
    # another model's checkpoint, and one whose weights do not fit the model its hyperparameters describe
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["gon_lightning"]["model"] = "gon_lightning.models.vae.VAE"
    torch.save(checkpoint, tmp_path / "other.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"].popitem()
    torch.save(checkpoint, tmp_path / "misfit.ckpt")
    for name, expected in [("other.ckpt", "holds a gon_lightning.models.vae.VAE"), ("misfit.ckpt", "does not fit")]:
        message = error_of(base_args(data, tmp_path / "runs", f"--ckpt_path={tmp_path / name}"))
        assert str(tmp_path / name) in message and expected in message


def test_model_options_given_with_a_checkpoint_are_never_silently_dropped(trained, tmp_path: Path):
    data, run = trained
    # the run's checkpoint, as if trained with lr 1e-3 and norm_eval running (options base_args does not give)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"].update(lr=1e-3, norm_eval="running")
    ckpt = tmp_path / "other.ckpt"
    torch.save(checkpoint, ckpt)

    def args(*extra: str) -> list[str]:
        return base_args(data, tmp_path / "runs", f"--ckpt_path={ckpt}", *extra, subcommand="test")

    model = main(args()).model
    assert (model.nz, model.lr, model.norm_eval) == (8, 1e-3, "running")  # what is not given: the checkpoint's
    # an evaluation option given wins over the checkpoint's, on the command line or in a --config
    assert main(args("--model.init_args.norm_eval=batch")).model.norm_eval == "batch"
    config = tmp_path / "eval.yaml"
    config.write_text("model:\n  init_args:\n    norm_eval: batch\n")
    assert main(args(f"--config={config}")).model.norm_eval == "batch"
    # any other model option given that differs from the checkpoint's is refused, naming both values
    message = error_of(args("--model.init_args.nz=16", "--model.init_args.lr=2e-4", "--model.init_args.ngf=4"))
    assert str(ckpt) in message and "model.init_args.nz: checkpoint 8, given 16" in message
    assert "model.init_args.lr: checkpoint 0.001, given 0.0002" in message and "ngf" not in message
    config.write_text("model:\n  init_args:\n    activation: relu\n")
    assert "model.init_args.activation: checkpoint elu, given relu" in error_of(args(f"--config={config}"))
    assert "model: checkpoint GON, given VAE" in error_of(args("--model=VAE"))
    # the documented commands repeat every option of the run: they agree with its checkpoint
    last = run / "checkpoints" / "last.ckpt"
    cli = main(["test", f"--config={run / 'config.yaml'}", f"--ckpt_path={last}", "--trainer.limit_test_batches=1"])
    assert cli.run_dir == run and cli.model.nz == 8
    message = error_of(args(f"--ckpt_path={last}", "--model.init_args.nz=16"))
    assert f"--config {run / 'config.yaml'} has them all" in message


def test_concurrent_runs_get_their_own_folders(mnist_root: Path, tmp_path: Path):
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_run_dir(tmp_path / "r", "gon-mnist"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8 and all(path.is_dir() for path in made)
    # two CLI runs started the same second
    first = main(base_args(mnist_root, tmp_path / "runs")[1:], run=False)  # run=False: no subcommand
    second = main(base_args(mnist_root, tmp_path / "runs")[1:], run=False)
    assert first.run_dir != second.run_dir and first.wandb_id != second.wandb_id


def test_offline_log_model_is_refused(mnist_root: Path, tmp_path: Path):
    message = error_of(base_args(mnist_root, tmp_path / "runs", "--trainer.logger.log_model=true", logger=None))
    assert "log_model" in message and "offline" in message


def test_test_writes_metrics_json_into_the_run(trained, tmp_path: Path, capsys: pytest.CaptureFixture):
    import json

    data, run = trained
    cli = main(
        base_args(data, tmp_path / "runs", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", subcommand="test")
    )
    assert cli.run_dir == run
    result = json.loads((run / "test_metrics.json").read_text())
    assert {"test/sse", "test/mse", "test/psnr"} <= result["metrics"].keys()
    assert f"-> {run / 'test_metrics.json'}" in capsys.readouterr().out
    assert (run / "test-config.yaml").is_file() and (run / "config.yaml").is_file()


def test_test_continues_the_wandb_run_without_listing_the_packages_again(trained, tmp_path: Path):
    data, trained_run = trained
    run = Path(shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name))  # the shared run stays W&B-free
    ckpt = run / "checkpoints" / "last.ckpt"
    cli = main(base_args(data, tmp_path / "runs", f"--ckpt_path={ckpt}", subcommand="test", logger=None))
    assert cli.run_dir == run and cli.wandb_id == load_checkpoint_file(ckpt)["gon_lightning"]["wandb_id"]
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert offline.name.endswith(cli.wandb_id)
    assert b"test/sse" in next(offline.glob("run-*.wandb")).read_bytes()  # metrics recorded as always
    assert not (offline / "files" / "requirements.txt").exists()


def test_predict_writes_grids_and_latents(trained, tmp_path: Path):
    data, run = trained
    out = tmp_path / "out"
    ckpt = run / "checkpoints" / "last.ckpt"
    main(
        base_args(
            data, tmp_path / "runs", f"--ckpt_path={ckpt}", f"--predictions.output_dir={out}", subcommand="predict"
        )
    )
    names = {p.name for p in out.iterdir()}
    assert {"reconstructions-0000.png", "interpolations.png", "latents.pt"} <= names
    latents = torch.load(out / "latents.pt", weights_only=True)
    assert latents.shape == (16, 8)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(mnist_root: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    args = base_args(mnist_root, runs, "--trainer.max_epochs=100000")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gon_lightning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:  # EpochLog prints plain lines when not on a terminal
            if line.startswith("epoch 0/"):  # training for real, past the first checkpoint (epochs count from 0)
                break
            assert time.monotonic() < deadline, "training never started"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    run = only_run(runs)
    last = run / "checkpoints" / "last.ckpt"
    assert f"checkpoint saved to {last}" in stderr
    assert f"resume with: gon-lightning fit --config {run / 'config.yaml'} --ckpt_path {last}" in stderr
    checkpoint = load_checkpoint_file(last)
    assert checkpoint["global_step"] >= 2 and checkpoint["gon_lightning"]["run_dir"] == str(run)
    assert not list((run / "checkpoints").glob(".*.part"))  # no temporary files left behind


def test_panels_cover_what_the_model_supports_and_skip_the_rest(tmp_path: Path):
    from gon_lightning.callbacks import make_panels
    from gon_lightning.models import GON

    model = GON(nz=8, ngf=4)
    x = torch.rand(6, 1, 32, 32)
    state = torch.get_rng_state()
    grids = make_panels(model, x, n_samples=4, interpolation_steps=3, render_size=48)
    assert set(grids) == {"reconstructions", "interpolations"}  # GON has no sample() or render() here
    assert torch.equal(torch.get_rng_state(), state)  # panels never move the training RNG
    model.sample = lambda n, sampler=None: torch.rand(n, 1, 32, 32)
    model.render = lambda z, size: torch.rand(len(z), 1, size, size)
    grids = make_panels(model, x, n_samples=4, interpolation_steps=3, render_size=48)
    assert set(grids) == {"reconstructions", "interpolations", "samples", "superres"}
    assert grids["superres"].shape[-2] == 2 * 48 + 3  # originals (blown up) over renders, padding 1
    assert grids["interpolations"].shape[-1] == 3 * 32 + 4


def test_last_checkpoint_is_the_latest_state_when_val_sse_gets_worse(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from gon_lightning.models import ImageModel

    # val/sse gets worse every epoch: only epoch 0 is ever the best (Lightning 2.6 refreshes last.ckpt only
    # when it saves a new best)
    monkeypatch.setattr(
        ImageModel, "validation_step", lambda self, x, batch_idx: self.log("val/sse", self.current_epoch + 1.0)
    )
    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs, "--trainer.max_epochs=3", "--images.every_n_epochs=0", logger="false"))
    checkpoints = only_run(runs) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch0000-val_sse1.0000.ckpt", "last.ckpt"]
    last = load_checkpoint_file(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 6)  # 3 epochs of 2 batches: the end of training
    # its state keeps ModelCheckpoint's key, so runs saved before keep their best-k bookkeeping on resume
    (key,) = (key for key in last["callbacks"] if "monitor" in key)
    assert key.startswith("ModelCheckpoint{") and last["callbacks"][key]["best_model_path"].endswith(
        "epoch0000-val_sse1.0000.ckpt"
    )


def test_last_checkpoint_links_to_a_checkpoint_of_the_same_step_else_is_written_once(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from gon_lightning.callbacks import AtomicCheckpointIO
    from gon_lightning.models import ImageModel

    scores = [3.0, 2.0, 4.0, 1.0]  # better, better, worse, best
    monkeypatch.setattr(
        ImageModel, "validation_step", lambda self, x, batch_idx: self.log("val/sse", scores[self.current_epoch])
    )
    writes: list[str] = []
    save = AtomicCheckpointIO.save_checkpoint

    def counted_save(self, checkpoint, path, *args, **kwargs):
        writes.append(Path(path).name)
        save(self, checkpoint, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", counted_save)
    runs = tmp_path / "runs"
    main(
        base_args(
            mnist_root,
            runs,
            "--trainer.max_epochs=4",
            "--images.every_n_epochs=0",
            logger="false",
        )
    )
    checkpoints = only_run(runs) / "checkpoints"
    # one full write per epoch: the improved epochs' top-k file (last.ckpt links to it), else last.ckpt itself
    assert writes == [
        "epoch0000-val_sse3.0000.ckpt",
        "epoch0001-val_sse2.0000.ckpt",
        "last.ckpt",
        "epoch0003-val_sse1.0000.ckpt",
    ]
    last = checkpoints / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch0003-val_sse1.0000.ckpt"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch0003-val_sse1.0000.ckpt", "last.ckpt"]
    state = load_checkpoint_file(last)
    assert (state["epoch"], state["global_step"]) == (3, 8)


def test_checkpoint_io_hands_back_a_bare_state_dict(tmp_path):
    """The ddp_spawn / ddp_fork launchers send the trained weights to the main process as a bare state_dict through
    the strategy's CheckpointIO: ours must load it back (a user's --ckpt_path is checked as a checkpoint by the CLI)."""
    from gon_lightning.callbacks import AtomicCheckpointIO

    weights = {"decoder.weight": torch.arange(6.0).reshape(2, 3)}
    io = AtomicCheckpointIO()
    io.save_checkpoint(weights, tmp_path / ".temp.ckpt")
    loaded = io.load_checkpoint(tmp_path / ".temp.ckpt")
    assert torch.equal(loaded["decoder.weight"], weights["decoder.weight"])
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"broken\.ckpt is corrupt"):
        io.load_checkpoint(tmp_path / "broken.ckpt")
