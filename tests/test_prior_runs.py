"""Post-hoc priors as runs of their own: `fit --config prior` on a model checkpoint's latents, exact resume, and the
prior's checkpoint as one generative model for evaluate, predict, export and from_pretrained."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import gon_lightning
from gon_lightning.cli import main
from gon_lightning.data import LatentDataModule
from gon_lightning.latents.encoding import load_run
from gon_lightning.metrics import extractors
from gon_lightning.metrics.copying import latent_copying_figures
from gon_lightning.priors import FlowMatchingPrior
from gon_lightning.priors.pair import model_with_prior
from tests.cli_args import base_args, only_run

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.usefixtures("one_thread"),
]

TINY_PRIOR = [
    "--model.init_args.hidden=16",
    "--model.init_args.depth=2",
    "--model.init_args.time_dim=8",
    "--model.init_args.sample_steps=4",
    "--model.init_args.warmup_steps=2",
    "--data.init_args.batch_size=64",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=CSVLogger",
]


@pytest.fixture(scope="session")
def model_run(_mnist_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GON (nz 8, ngf 4) trained 4 steps on the fake MNIST (256 train, 64 test images): its run folder."""
    root = tmp_path_factory.mktemp("prior_source")
    data = Path(shutil.copytree(_mnist_files, root / "data"))
    main([*base_args(data, root / "runs"), "--trainer.limit_train_batches=4"])
    return only_run(root / "runs")


@pytest.fixture(scope="session")
def prior_run(model_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flow-matching prior fitted 8 steps (2 epochs of 4 batches) on that GON's latents: its run folder."""
    runs = tmp_path_factory.mktemp("prior_runs")
    prior_fit(model_run / "checkpoints" / "last.ckpt", runs, "--trainer.max_steps=8")
    return only_run(runs)


def prior_fit(ckpt: Path, runs: Path, *extra: str) -> None:
    main(["fit", "--config", "prior", f"--data.ckpt_path={ckpt}", f"--runs_root={runs}", *TINY_PRIOR, *extra])


def test_prior_run_learns_the_model_s_latents_and_names_them(prior_run: Path, model_run: Path) -> None:
    checkpoint = torch.load(prior_run / "checkpoints" / "last.ckpt", weights_only=True)
    source = checkpoint["gon_lightning_prior_source"]
    assert Path(source["checkpoint"]) == (model_run / "checkpoints" / "last.ckpt").absolute()
    assert len(source["sha256"]) == 64 and source["nz"] == 8 and source["model"].endswith(".GON")
    assert checkpoint["hyper_parameters"]["latent_size"] == 8  # linked from the data
    state = checkpoint["state_dict"]
    assert bool(state["standardised"]) and state["latent_std"].shape == (8,)
    metrics = (prior_run / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics
    assert (model_run / "latents").is_dir()  # the model's latents, encoded once into its own run folder


def test_a_prior_named_by_model_keeps_its_own_figure(model_run: Path, tmp_path: Path) -> None:
    # without --config prior: the checkpoint monitors the prior's val/loss, not the image models' val/sse
    ckpt = model_run / "checkpoints" / "last.ckpt"
    args = ["fit", "--model=FlowMatchingPrior", "--data=LatentDataModule", f"--data.ckpt_path={ckpt}"]
    main([*args, f"--runs_root={tmp_path}", *TINY_PRIOR, "--trainer.max_steps=4"])
    run = only_run(tmp_path)
    (best,) = (run / "checkpoints").glob("step*")
    assert best.name.startswith("step000004-val_loss")
    assert "monitor: val/loss" in (run / "config.yaml").read_text()


class StopAfterFirstEpoch(pl.Callback):
    """An interrupted run: it stops after its first epoch (and its checkpoint), its schedule still the 8 steps'."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


@pytest.mark.equality
def test_prior_run_resumes_exactly_from_last_ckpt(prior_run: Path, model_run: Path, tmp_path: Path) -> None:
    ckpt = model_run / "checkpoints" / "last.ckpt"
    prior_fit(ckpt, tmp_path / "runs", "--trainer.max_steps=8", f"--trainer.callbacks+={__name__}.StopAfterFirstEpoch")
    run = only_run(tmp_path / "runs")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    prior_fit(ckpt, tmp_path / "runs", "--trainer.max_steps=8", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    straight = torch.load(prior_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == 8
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_prior_checkpoint_is_one_generative_model(
    prior_run: Path, model_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prior_ckpt = prior_run / "checkpoints" / "last.ckpt"
    # the fake MNIST ships no LeNet: evaluate trains one on it, 2 steps here rather than 3,000 (35 s); no figure of
    # it is checked (test_sample_quality.py tests the extractors)
    monkeypatch.setattr(extractors, "TRAIN_STEPS", 2)
    # evaluate needs no other option: the model's samples through the prior, against the model's own data
    main(["evaluate", "--ckpt_path", str(prior_ckpt), "--num_samples=32", "--trainer.accelerator=cpu"])
    quality = json.loads((prior_run / "sample_quality.json").read_text())
    assert quality["drawn_by"] == "diffusion" and quality["model"] == "GON"
    assert quality["reference"]["dataset"] == "MNISTDataModule" and quality["num_samples"] == 32
    assert {"solver": "heun", "sample_steps": 4}.items() <= quality["prior"]["init_args"].items()  # the run's
    # the ODE's solver and steps are evaluation options: given with the checkpoint, they win, and are recorded
    euler = tmp_path / "euler"
    ode = ["--model.init_args.solver=euler", "--model.init_args.sample_steps=2", f"--out={euler}"]
    main(["evaluate", "--ckpt_path", str(prior_ckpt), *ode, "--num_samples=32", "--trainer.accelerator=cpu"])
    by_euler = json.loads((euler / "sample_quality.json").read_text())
    assert {"solver": "euler", "sample_steps": 2}.items() <= by_euler["prior"]["init_args"].items()
    assert by_euler["fd_lenet"] != quality["fd_lenet"]
    # export: one folder, safetensors only, config.json records the prior, the card names it
    out = tmp_path / "export"
    main(["export", "--ckpt_path", str(prior_ckpt), "--out", str(out), "--num_images=0"])
    assert sorted(p.suffix for p in out.iterdir() if p.suffix in (".ckpt", ".pt", ".pkl", ".bin")) == []
    config = json.loads((out / "config.json").read_text())
    assert config["priors"]["default"] == "diffusion"
    card = (out / "README.md").read_text()
    assert "the learned prior `diffusion` (FlowMatchingPrior" in card and "sampler `diffusion`" in card
    # the same samples, bit for bit for a seed: the pair rebuilt from the checkpoints, and the exported folder
    pair, _, _ = model_with_prior(
        FlowMatchingPrior(latent_size=8, hidden=16, depth=2, time_dim=8, sample_steps=4, solver="heun"), prior_ckpt
    )
    loaded = gon_lightning.from_pretrained(out)
    assert loaded.samplers[0] == "diffusion"
    pair.eval()
    drawn = []
    for model in (pair, loaded):
        torch.manual_seed(7)
        drawn.append(model.sample(5))
    assert torch.equal(*drawn)
    model, _ = load_run(model_run / "checkpoints" / "last.ckpt")
    torch.manual_seed(7)
    assert not torch.equal(model.eval().sample(5), drawn[0])  # not the model's own default sampler
    # evaluate's copying figures in the prior's latent space: the latents its samples were decoded from against the
    # model's training and test latents, standardised (the same batches and seed drawn again here)
    data = LatentDataModule(ckpt_path=str(model_run / "checkpoints" / "last.ckpt"))
    data.prepare_data()
    data.setup("fit")
    torch.manual_seed(quality["seed"])
    batch = quality["batch_size"]
    latents = torch.cat([pair.sample_latents(min(batch, 32 - i), "diffusion") for i in range(0, 32, batch)])
    expected = latent_copying_figures(data.latents("train"), latents, data.latents("test"), quality["seed"])
    assert quality["latent_copy_ratio"] == pytest.approx(expected["latent_copy_ratio"], rel=1e-12)
    assert {"latent_copy_ratio", "latent_copying_z"} <= set(quality["figures"])


@pytest.mark.slow
def test_prior_checkpoint_predicts_samples_through_the_prior(prior_run: Path, tmp_path: Path) -> None:
    prior_ckpt = prior_run / "checkpoints" / "last.ckpt"
    main(["predict", "--ckpt_path", str(prior_ckpt), "--predictions.num_samples=4", "--predictions.sampler=diffusion",
          "--trainer.limit_predict_batches=1", "--trainer.accelerator=cpu"])  # fmt: skip
    assert (prior_run / "predictions" / "samples.png").is_file()


def test_an_online_prior_is_a_sampler_of_its_checkpoint_by_name(
    _mnist_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a GON fitted with OnlinePrior: evaluate and predict take --sampler diffusion from its checkpoint alone (the
    # prior is rebuilt from the checkpoint before the sampler is checked against the model)
    data = Path(shutil.copytree(_mnist_files, tmp_path / "data"))
    online = '--trainer.callbacks+={"class_path": "OnlinePrior", "init_args": {"prior_args": {"hidden": 16, ' + (
        '"depth": 1, "time_dim": 8, "sample_steps": 2}}}'
    )
    main([*base_args(data, tmp_path / "runs"), online])
    run = only_run(tmp_path / "runs")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(extractors, "TRAIN_STEPS", 2)  # the fake MNIST's LeNet (no figure of it is checked)
    config = f"--config={run / 'config.yaml'}"
    main(["evaluate", config, f"--ckpt_path={ckpt}", "--sampler=diffusion", "--num_samples=16", f"--out={tmp_path}"])
    quality = json.loads((tmp_path / "sample_quality.json").read_text())
    assert quality["drawn_by"] == "diffusion" and quality["latent_copy_ratio"] > 0  # the model's own latents encoded
    main(["predict", config, f"--ckpt_path={ckpt}", "--predictions.sampler=diffusion", "--predictions.num_samples=4",
          "--trainer.limit_predict_batches=1", "--trainer.logger=false"])  # fmt: skip
    assert (run / "predictions" / "samples.png").is_file()


@pytest.mark.slow
def test_bad_inputs_are_one_line(prior_run: Path, model_run: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as raised:
        prior_fit(loose, tmp_path / "runs", "--trainer.max_steps=1")
    assert "lies outside a run folder" in str(raised.value.code) and "\n" not in str(raised.value.code)
    foreign = tmp_path / "run" / "checkpoints" / "foreign.ckpt"  # in a run folder, but not a checkpoint
    foreign.parent.mkdir(parents=True)
    shutil.copyfile(model_run / "config.yaml", tmp_path / "run" / "config.yaml")
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as raised:
        prior_fit(foreign, tmp_path / "runs", "--trainer.max_steps=1")
    assert "not a PyTorch checkpoint" in str(raised.value.code) and "\n" not in str(raised.value.code)
    # the model checkpoint changed after the prior learned its latents: refused, not silently mismatched
    source = Path(torch.load(prior_run / "checkpoints" / "last.ckpt", weights_only=True)[
        "gon_lightning_prior_source"]["checkpoint"])  # fmt: skip
    original = source.read_bytes()
    try:
        checkpoint = torch.load(source, weights_only=True)
        checkpoint["epoch"] += 1
        torch.save(checkpoint, source)
        with pytest.raises(SystemExit) as raised:
            main(["evaluate", "--ckpt_path", str(prior_run / "checkpoints" / "last.ckpt"), "--num_samples=8"])
        assert "has changed since: train the prior again" in str(raised.value.code)
    finally:
        source.write_bytes(original)


def test_prior_recipes_decodings_score_the_model_s_own_decodings(
    model_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/prior_recipes.py --decodings (the copying figures' control): the model's decodings of its test
    latents and of --samples training latents, scored as evaluate scores, one JSON line each, nothing trained."""
    monkeypatch.setattr(extractors, "TRAIN_STEPS", 2)  # the fake MNIST's LeNet (no figure of it is checked)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_recipes.py"
    spec = importlib.util.spec_from_file_location("prior_recipes", script)
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    ckpt = model_run / "checkpoints" / "last.ckpt"
    argv = ["prior_recipes.py", "--ckpt", str(ckpt), "--decodings", "--samples", "32", "--smoothed", "0", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    recipes.main()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["decoded"], row.get("latents")) for row in rows[:2]] == [("test", 64), ("train", 32)]
    assert all(set(recipes.FIGURES) <= set(row) for row in rows)
    # blurred training latents (a kernel density): no noise decodes the training rows themselves, copies in latent
    # space; noise far wider than the latents' spread lands farther from them than the test latents are
    unblurred, blurred = rows[2:]
    assert (unblurred["std"], blurred["std"]) == (0, 5)
    assert {name: unblurred[name] for name in recipes.FIGURES} == {name: rows[1][name] for name in recipes.FIGURES}
    assert unblurred["latent_copy_ratio"] == 0 and blurred["latent_copy_ratio"] > 1
