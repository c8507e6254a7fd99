"""benchmarks/reproduce.py: the published table, the cell choice, the verdicts and one real run through the CLI."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


reproduce = load_reproduce()
PUBLISHED = yaml.safe_load(reproduce.PUBLISHED.read_text())


def test_published_table_is_complete_and_every_cell_has_a_config():
    assert PUBLISHED["source"] and PUBLISHED["batch_size"] == 64
    references = {d.reference for d in reproduce.DATASETS.values()}
    for model, by_data in PUBLISHED["results"].items():
        assert model in reproduce.MODELS
        for data, metrics in by_data.items():
            assert data in references and data in PUBLISHED["train_images"]
            assert (ROOT / "configs" / f"{model}_{data}.yaml").is_file()
            for entry in metrics.values():
                assert set(entry.get("curve", {})) <= set(reproduce.CURVE_EPOCHS)
                assert entry["final"]["epochs"] > 0 if "final" in entry else entry["curve"]
    # spot checks against the published tables (benchmarks/published.yaml names its sources)
    assert PUBLISHED["results"]["gon"]["cifar"]["sse"]["curve"][10] == 10.8
    assert PUBLISHED["results"]["vgon"]["mnist"]["elbo"]["final"] == {"epochs": 1000, "train": 148.8, "test": 149.9}
    assert PUBLISHED["results"]["implicit_gon"]["coil20"]["mse"]["final"]["test"] == 0.0116


def test_cells_follow_the_published_table_and_optional_datasets(tmp_path):
    cells = reproduce.published_cells(PUBLISHED, ["gon", "vae"], ["mnist5k", "cifar?", "coil20"], tmp_path)
    assert [c.name for c in cells] == ["gon_mnist5k", "gon_coil20", "vae_mnist5k"]  # nothing published: vae coil20
    (tmp_path / "cifar-10-batches-py").mkdir()
    cells = reproduce.published_cells(PUBLISHED, ["gon"], ["cifar?"], tmp_path)
    assert [c.name for c in cells] == ["gon_cifar"]
    assert reproduce.published_cells(PUBLISHED, ["implicit_gon"], ["mnist"], tmp_path)[0].metric == "mse"
    with pytest.raises(SystemExit, match="unknown dataset 'svhn'"):
        reproduce.published_cells(PUBLISHED, ["gon"], ["svhn"], tmp_path)
    with pytest.raises(SystemExit, match="unknown model 'gan'"):
        reproduce.published_cells(PUBLISHED, ["gan"], ["mnist"], tmp_path)


def test_reference_epochs_and_published_values():
    assert reproduce.reference_epoch_steps(PUBLISHED, "mnist5k") == 937  # MNIST's epoch, not MNIST5k's 62
    assert reproduce.reference_epoch_steps(PUBLISHED, "coil20") == 18
    cell = reproduce.published_cells(PUBLISHED, ["vgon"], ["mnist"], Path("."))[0]
    assert reproduce.published_at(cell, "sse", 5) == 25.3
    assert reproduce.published_at(cell, "sse", 7) is None
    assert reproduce.published_at(cell, "elbo", 1000) == 149.9
    assert reproduce.published_at(cell, "elbo", 1000, "train") == 148.8


@pytest.mark.parametrize(
    ("ours", "theirs", "verdict"),
    [(1.1, 1.0, "match"), (0.86, 1.0, "match"), (1.2, 1.0, "worse"), (0.8, 1.0, "better")],
)
def test_verdicts_are_within_fifteen_percent(ours, theirs, verdict):
    assert reproduce.ratio_cell(ours, theirs)[1] == verdict
    assert reproduce.ratio_cell(ours, None) == ("", "")


def test_options_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        reproduce.parse(["--models", "gon"])  # no datasets, no epochs, no preset
    args = reproduce.parse(["--preset", "cpu", "--epochs", "3", "--", "--trainer.precision", "bf16-mixed"])
    assert (args.models, args.epochs, args.extra) == (
        ["gon", "gon_detached", "ae"],
        3,
        ["--trainer.precision", "bf16-mixed"],
    )
    with pytest.raises(SystemExit):
        reproduce.parse(["--preset", "cpu", "--notes", str(tmp_path / "missing.md")])
    with pytest.raises(SystemExit):  # the curves are validation passes on the test split
        reproduce.parse(["--preset", "cpu", "--", "--data.init_args.val_fraction", "0.1"])


@pytest.mark.slow
def test_a_small_grid_runs_through_the_cli_and_reports(tmp_path, mnist_root):
    # a reference epoch of 2 steps (128 training images), so the real fit/test subprocesses take seconds
    published = {**PUBLISHED, "train_images": {**PUBLISHED["train_images"], "mnist": 128, "fashion": 128}}
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(published))
    shutil.copytree(mnist_root / "MNIST", mnist_root / "FashionMNIST")
    raw = mnist_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:1000])  # a corrupt Fashion-MNIST: that cell fails, the grid goes on
    (tmp_path / "notes.md").write_text("## Analysis\n\nHand-written.")
    out = tmp_path / "report.md"
    argv = [
        *("--models", "gon", "--datasets", "mnist", "fashion", "--epochs", "2", "--data-root", str(mnist_root)),
        *("--published", str(tmp_path / "published.yaml"), "--out", str(out), "--work-dir", str(tmp_path / "work")),
        *("--notes", str(tmp_path / "notes.md"), "--", "--trainer.log_every_n_steps", "1"),
    ]
    assert reproduce.main(argv) == 1  # one cell failed

    text = out.read_text()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| gon")]
    rows = {cell[2]: cell for cell in cells if cell[1] == "mnist"}
    assert set(rows) == {"test/sse @ 1", "test/sse @ 2 (final)"}
    assert rows["test/sse @ 1"][4] == "3.63"  # the published value beside ours
    assert float(rows["test/sse @ 1"][3]) > 0 and float(rows["test/sse @ 1"][7]) > 0  # ours, and seconds per epoch
    assert "| gon | fashion | failed | fit failed:" in text and "corrupt" in text
    assert "## Misses beyond 15%" in text and "**gon / mnist**" in text and text.rstrip().endswith("Hand-written.")

    cell = reproduce.published_cells(published, ["gon"], ["mnist"], mnist_root)[0]
    run_dir = next((tmp_path / "work" / "gon_mnist").iterdir())
    reproduce.read_curve(cell, run_dir, 2)
    # the curve's last point is the validation pass on the test split; `gon-lightning test` on last.ckpt agrees
    assert sorted(cell.ours) == [1, 2] and cell.ours[2] == pytest.approx(
        float(rows["test/sse @ 2 (final)"][3]), rel=1e-3
    )
    assert cell.seconds[2] >= cell.seconds[1] > 0
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["TrainingClock"]
    # the clock goes on from there when the run is resumed (the CSV holds the float32 the logger got)
    assert state["elapsed"] == pytest.approx(cell.seconds[2], rel=1e-5)

    # a rerun with the same work folder and budget reuses the finished cell instead of training again
    log = tmp_path / "work" / "gon_mnist.log"
    before = log.stat().st_mtime
    assert reproduce.main(argv) == 1
    assert log.stat().st_mtime == before and "1 of 2 cells reused" in out.read_text()
