"""Export and from_pretrained: the folder, the model card, --push's upload (patched: no Hub is reachable here), a
fresh offline process loading the same model bit for bit, and one-line refusals of bad folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import gon_lightning
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.export import from_pretrained, run_records, save_pretrained
from gon_lightning.models import GON, VAE
from tests.cli_args import only_run

REPO = Path(__file__).resolve().parents[1]

# A fresh process, the network blocked and the Hub offline: load the export, write what it holds and makes.
FRESH_PROCESS = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
import torch
from safetensors.torch import save_file
import gon_lightning
torch.set_num_threads(1)
folder, probe, out = sys.argv[1:4]
model = gon_lightning.from_pretrained(folder, trust_remote_code=True)
inputs = torch.load(probe, weights_only=True)
with model.evaluation_protocol():
    made = {"decoded": model.decode_latents(inputs["z"]), "reconstructed": model.reconstruct(inputs["x"])}
made.update({"state/" + k: v.contiguous() for k, v in model.state_dict().items()})
made["training"] = torch.tensor(model.training)
save_file({k: v.detach().contiguous() for k, v in made.items()}, out)
try:
    gon_lightning.from_pretrained("someone/never-downloaded")
except Exception as error:
    print("HUB:", type(error).__name__, error)
"""


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


@pytest.mark.slow
@pytest.mark.equality
def test_export_then_load_in_a_fresh_offline_process(mnist_root: Path, tmp_path: Path, monkeypatch):
    """An own decoder (tests/own_networks.py), trained, tested, measured; exported with --push (the upload patched)."""
    args = ["--model=GON", "--model.init_args.nz=8", "--model.init_args.decoder=tests.own_networks.UpDecoder"]
    args += ["--model.init_args.decoder.width=4", "--data=MNISTDataModule", f"--data.init_args.root={mnist_root}"]
    args += ["--data.init_args.batch_size=16", "--data.init_args.download=false", f"--runs_root={tmp_path / 'runs'}"]
    args += ["--trainer.accelerator=cpu", "--trainer.logger=CSVLogger", "--trainer.enable_model_summary=false"]
    main(["fit", *args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"])
    run = only_run(tmp_path / "runs")
    ckpt = run / "checkpoints" / "last.ckpt"
    main(["test", "--config", str(run / "config.yaml"), f"--ckpt_path={ckpt}", "--trainer.limit_test_batches=2"])
    tested = json.loads((run / "test_metrics.json").read_text())["metrics"]
    quality = {"fd_lenet": 12.5, "kid_mean": 0.01, "kid_std": 0.002, "precision": 0.6, "recall": 0.5}
    quality |= {"density": 0.9, "coverage": 0.7, "extractor": "lenet", "num_samples": 64}
    (run / "sample_quality.json").write_text(json.dumps(quality))

    uploads: list[dict] = []

    def upload_folder(self, **kwargs):  # what --push hands the Hub: the folder as it is at that moment
        uploads.append({**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())})
        return huggingface_hub.CommitInfo(
            commit_url="https://huggingface.co/me/gon/commit/1", commit_message="", commit_description="", oid="1"
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "export"
    before = sorted(p.name for p in run.iterdir())
    main(["export", f"--ckpt_path={ckpt}", f"--out={out}", "--num_images=4", "--push=me/gon"])
    files = ["README.md", "config.json", "config.yaml", "model.safetensors", "reconstructions.png", "samples.png"]
    assert sorted(p.name for p in out.iterdir()) == files
    assert [(u["repo_id"], u["repo_type"], u["folder_path"], u["files"]) for u in uploads] == [
        ("me/gon", "model", str(out), files)
    ]
    assert sorted(p.name for p in run.iterdir()) == before  # export leaves the run as it was, and no new run
    assert only_run(tmp_path / "runs") == run

    # a checkpoint kept outside its run folder exports with --config, and leaves no run folder either
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(ckpt.read_bytes())
    main(["export", "--config", str(run / "config.yaml"), f"--ckpt_path={loose}", f"--out={tmp_path / 'loose'}"])
    assert only_run(tmp_path / "runs") == run and (tmp_path / "loose" / "model.safetensors").is_file()
    assert "Left out: " in (tmp_path / "loose" / "README.md").read_text()  # the run's test was of another file

    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "gon-lightning" and "gon" in meta["tags"] and meta["datasets"] == ["mnist"]
    (index,) = meta["model-index"]
    results = {m["name"]: m["value"] for result in index["results"] for m in result["metrics"]}
    assert {k: results[k] for k in tested} == tested  # the test run's metrics, exactly
    assert results["fd_lenet (lenet)"] == 12.5 and results["coverage (lenet)"] == 0.7
    assert 'from_pretrained("me/gon", trust_remote_code=True)' in card and "arXiv 2007.02798" in card
    assert "tests.own_networks.UpDecoder" in card and "seed: 0" in card
    config = json.loads((out / "config.json").read_text())
    assert config["gon_lightning_format"] == 1 and config["gon_lightning_version"] == gon_lightning.__version__
    assert config["model"]["init_args"]["decoder"]["class_path"] == "tests.own_networks.UpDecoder"

    # the checkpoint, loaded the Lightning way, against what a fresh offline process makes of the export
    torch.set_num_threads(1)
    model = GON.load_from_checkpoint(ckpt, map_location="cpu").eval()
    probe = {"z": torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), "x": torch.rand(6, 1, 32, 32)}
    torch.save(probe, tmp_path / "probe.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(out), str(tmp_path / "probe.pt"), str(tmp_path / "made.st")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    made = load_file(tmp_path / "made.st")
    checkpoint_state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert set(checkpoint_state) == {k.removeprefix("state/") for k in made if k.startswith("state/")}
    for name, tensor in checkpoint_state.items():
        assert torch.equal(made[f"state/{name}"], tensor), name
    with model.evaluation_protocol():
        assert torch.equal(made["decoded"], model.decode_latents(probe["z"]))
        assert torch.equal(made["reconstructed"], model.reconstruct(probe["x"]))
    assert not made["training"]
    # a Hub id that was never downloaded, offline: one line saying so
    (hub_line,) = [line for line in done.stdout.splitlines() if line.startswith("HUB:")]
    assert hub_line.startswith("HUB: UserError someone/never-downloaded: no such local folder, and the Hub download")


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_pretrained(GON(nz=8, ngf=4), tmp_path / "gon")


def test_save_pretrained_round_trip(exported: Path):
    torch.manual_seed(0)
    model = GON(nz=8, ngf=4)
    state = torch.get_rng_state()
    loaded = from_pretrained(exported)
    assert torch.equal(torch.get_rng_state(), state)  # building the model drew no numbers from the caller's seed
    assert not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def refusal(source: Path | str, **kwargs) -> str:
    with pytest.raises(UserError) as raised:
        from_pretrained(source, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_bad_export_folders_are_refused_in_one_line(exported: Path, tmp_path: Path):
    assert refusal(tmp_path / "nowhere") == f"export folder {tmp_path / 'nowhere'} does not exist"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "pytorch_model.bin").write_bytes(b"")
    assert refusal(foreign) == f"{foreign} is not a gon-lightning export: it has no config.json"
    (foreign / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert (
        refusal(foreign) == f"{foreign / 'config.json'} is not a gon-lightning export config (no gon_lightning_format)"
    )

    config = exported / "config.json"
    original = config.read_text()
    config.write_text(original[:-20])  # truncated
    assert refusal(exported).startswith(f"{config} is not readable JSON")
    config.write_text(original)
    edit_config(exported, lambda c: c["model"]["init_args"].update(nz=16))
    message = refusal(exported)
    assert message.startswith(f"{exported / 'model.safetensors'} does not fit the model {config} describes (differ ")
    assert "latent_sum: (8,) F64 != (16,) F64" in message and "more)" in message
    config.write_text(original)
    edit_config(exported, lambda c: c["model"].update(class_path="os.system"))
    assert "names os.system, code outside gon_lightning: pass trust_remote_code=True" in refusal(exported)
    assert refusal(exported, trust_remote_code=True) == f"{config} names os.system, which is not a gon-lightning model"
    config.write_text(original)
    edit_config(exported, lambda c: c["model"]["init_args"].update(nz=-1))
    assert refusal(exported) == f"{config}: model.init_args.nz must be a positive integer, got -1"
    config.write_text(original)

    # the weights of another model
    torch.manual_seed(0)
    other = save_pretrained(VAE(nz=8, ngf=4), tmp_path / "vae")
    (exported / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert refusal(exported) == (
        f"{exported / 'model.safetensors'} holds the weights of a gon_lightning.models.vae.VAE, but {config} describes "
        "a gon_lightning.models.gon.GON"
    )
    weights = load_file(other / "model.safetensors")
    save_file(weights, exported / "model.safetensors")  # no metadata: the tensors themselves disagree
    message = refusal(exported)
    assert "does not fit the model" in message and "missing latent_" in message and "unexpected encoder." in message
    (exported / "model.safetensors").write_bytes(b"not safetensors")
    assert refusal(exported).startswith(f"{exported / 'model.safetensors'} is not a readable safetensors file")
    (exported / "model.safetensors").unlink()
    assert refusal(exported) == f"{exported} has no model.safetensors: not a complete gon-lightning export"


def test_an_own_class_is_imported_only_when_trusted_and_importable(tmp_path: Path):
    folder = save_pretrained(GON(nz=8, decoder={"class_path": "tests.own_networks.UpDecoder"}), tmp_path / "own")
    config = folder / "config.json"
    assert refusal(folder) == (
        f"{config} names tests.own_networks.UpDecoder, code outside gon_lightning: pass trust_remote_code=True to "
        "import and run it (only for exports you trust)"
    )
    assert isinstance(from_pretrained(folder, trust_remote_code=True).decoder, torch.nn.Module)
    edit_config(folder, lambda c: c["model"]["init_args"]["decoder"].update(class_path="my_lab.nets.UpDecoder"))
    assert refusal(folder, trust_remote_code=True) == (
        f"{config} names my_lab.nets.UpDecoder, which cannot be imported: No module named 'my_lab'"
    )
    built = GON(nz=8, decoder=__import__("tests.own_networks").own_networks.UpDecoder(8, (1, 32, 32)))
    with pytest.raises(UserError, match=r"model.init_args.decoder was given as a built module .*cannot rebuild"):
        save_pretrained(built, tmp_path / "built")


def test_export_needs_a_run_folder_or_a_config(tmp_path: Path):
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        main(["export", f"--ckpt_path={loose}", f"--out={tmp_path / 'out'}"])
    assert str(raised.value.code).startswith(f"gon-lightning: error: --ckpt_path {loose} lies outside a run folder")
    assert not (tmp_path / "out").exists()


def test_the_card_takes_only_records_of_this_checkpoint(tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt, other = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "epoch0000.ckpt"
    ckpt.write_bytes(b"x")
    other.write_bytes(b"y")
    os.utime(ckpt, (1_000_000, 1_000_000))
    (run / "test_metrics.json").write_text(json.dumps({"checkpoint": str(ckpt), "metrics": {"test/sse": 3.5}}))
    (run / "sample_quality.json").write_text(json.dumps({"checkpoint": str(other), "fid": 1.0}))
    metrics, quality, notes = run_records(run, ckpt)
    assert metrics == {"test/sse": 3.5} and quality == {}
    assert notes == [f"{run / 'sample_quality.json'} measured another checkpoint, or an older last.ckpt"]
    ckpt.write_bytes(b"trained on")  # training went on after the test: the metrics describe an older last.ckpt
    metrics, _, notes = run_records(run, ckpt)
    assert metrics == {} and notes[0].startswith(f"{run / 'test_metrics.json'} holds the test of another checkpoint")
