"""benchmarks/reproduce.py and its parts (benchmarks/reproduction/): the published table, the cell choice, the
verdicts and one real run through the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the script and its parts, the package `reproduction` beside it
import reproduce  # noqa: E402
from reproduction import grid, report, samples  # noqa: E402

PUBLISHED = yaml.safe_load(reproduce.PUBLISHED.read_text())


def test_published_table_is_complete_and_every_cell_has_a_config():
    assert PUBLISHED["source"] and PUBLISHED["batch_size"] == 64
    references = {d.reference for d in grid.DATASETS.values()}
    for model, by_data in PUBLISHED["results"].items():
        assert model in grid.MODELS
        for data, metrics in by_data.items():
            assert data in references and data in PUBLISHED["train_images"]
            assert (ROOT / "configs" / f"{model}_{data}.yaml").is_file()
            for entry in metrics.values():
                assert set(entry.get("curve", {})) <= set(grid.CURVE_EPOCHS)
                assert entry["final"]["epochs"] > 0 if "final" in entry else entry["curve"]
    # spot checks against the published tables (benchmarks/published.yaml names its sources)
    assert PUBLISHED["results"]["gon"]["cifar"]["sse"]["curve"][10] == 10.8
    assert PUBLISHED["results"]["vgon"]["mnist"]["elbo"]["final"] == {"epochs": 1000, "train": 148.8, "test": 149.9}
    assert PUBLISHED["results"]["implicit_gon"]["coil20"]["mse"]["final"]["test"] == 0.0116


def test_cells_follow_the_published_table_and_optional_datasets(tmp_path):
    cells = grid.published_cells(PUBLISHED, ["gon", "vae"], ["mnist5k", "cifar?", "coil20"], tmp_path)
    assert [c.name for c in cells] == ["gon_mnist5k", "gon_coil20", "vae_mnist5k"]  # nothing published: vae coil20
    (tmp_path / "cifar-10-batches-py").mkdir()
    cells = grid.published_cells(PUBLISHED, ["gon"], ["cifar?"], tmp_path)
    assert [c.name for c in cells] == ["gon_cifar"]
    assert grid.published_cells(PUBLISHED, ["implicit_gon"], ["mnist"], tmp_path)[0].metric == "mse"
    with pytest.raises(SystemExit, match="unknown dataset 'svhn'"):
        grid.published_cells(PUBLISHED, ["gon"], ["svhn"], tmp_path)
    with pytest.raises(SystemExit, match="unknown model 'gan'"):
        grid.published_cells(PUBLISHED, ["gan"], ["mnist"], tmp_path)


def test_reference_epochs_and_published_values():
    assert grid.reference_epoch_steps(PUBLISHED, "mnist5k") == 937  # MNIST's epoch, not MNIST5k's 62
    assert grid.reference_epoch_steps(PUBLISHED, "coil20") == 18
    cell = grid.published_cells(PUBLISHED, ["vgon"], ["mnist"], Path("."))[0]
    assert grid.published_at(cell, "sse", 5) == 25.3
    assert grid.published_at(cell, "sse", 7) is None
    assert grid.published_at(cell, "elbo", 1000) == 149.9
    assert grid.published_at(cell, "elbo", 1000, "train") == 148.8


def test_spread_over_seeds():
    spread = report.Spread.of([1.0, 2.0, 3.0])
    assert (spread.mean, spread.sd, spread.low, spread.high, spread.n) == (2.0, 1.0, 1.0, 3.0, 3)
    assert report.Spread.of([]) is None and report.Spread.of([4.0]).sd == 0.0
    assert report.fmt_spread(spread) == "2 ± 1 [1, 3] (3)"
    assert report.fmt_spread(report.Spread.of([4.0])) == "4 (1)"


@pytest.mark.parametrize(
    ("seeds", "published", "expected"),
    [
        ([1.1, 1.12], 1.0, "match"),  # mean within 15%
        ([0.5, 2.5], 1.0, "match"),  # inside the seeds' range, however wide
        ([1.3, 1.4], 1.0, "worse"),
        ([0.7, 0.8], 1.0, "better"),
        ([1.5], 1.0, "1 run: none"),  # never a verdict from one run
    ],
)
def test_verdicts_are_taken_against_the_seed_spread(seeds, published, expected):
    assert report.verdict(report.Spread.of(seeds), published)[1] == expected
    assert report.verdict(report.Spread.of(seeds), None) == ("", "")


def test_ours_and_the_published_loop_agree_when_their_seeds_overlap():
    spread = report.Spread.of
    assert report.same_algorithm(spread([5.0, 6.0]), spread([5.8, 7.5])) == "yes"  # ranges overlap
    assert report.same_algorithm(spread([5.0, 5.1]), spread([5.5, 5.6])) == "yes"  # means within 15%
    assert report.same_algorithm(spread([5.0, 5.1]), spread([7.0, 7.1])) == "no"
    assert report.same_algorithm(spread([5.0]), spread([5.0, 6.0])) == "1 run: none"
    assert report.same_algorithm(None, spread([5.0])) == ""


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
    args = reproduce.parse(["--preset", "cpu", "--seeds", "2", "--first-seed", "3", "--published-loop"])
    assert args.seed_list == [3, 4] and args.implementations == ["ours", "loop"]
    assert reproduce.parse(["--preset", "cpu"]).seed_list == [0, 1, 2]  # three seeds unless told
    with pytest.raises(SystemExit):  # nothing to read the report from
        reproduce.parse(["--preset", "cpu", "--report-only"])


def table_rows(text: str, columns: int) -> list[list[str]]:
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| gon")]
    return [cell for cell in cells if len(cell) == columns]


def rows_of(text: str) -> dict[tuple[str, str, str], list[str]]:
    """The main table's rows by (model, data, figure)."""
    return {(cell[0], cell[1], cell[2]): cell for cell in table_rows(text, 11)}


@pytest.mark.slow
def test_a_small_grid_runs_through_the_cli_and_reports(tmp_path, mnist_root):
    # a reference epoch of 4 steps (the fixture's 256 training images, as the published loop's epoch), so the real
    # fit/test subprocesses take seconds
    published = {**PUBLISHED, "train_images": {**PUBLISHED["train_images"], "mnist": 256, "fashion": 256}}
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(published))
    shutil.copytree(mnist_root / "MNIST", mnist_root / "FashionMNIST")
    raw = mnist_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:1000])  # a corrupt Fashion-MNIST: its runs fail, the grid goes on
    (tmp_path / "notes.md").write_text("## Analysis\n\nHand-written.")
    out, work = tmp_path / "report.md", tmp_path / "work"
    argv = [
        *("--models", "gon", "--datasets", "mnist", "fashion", "--epochs", "2", "--data-root", str(mnist_root)),
        *("--published", str(tmp_path / "published.yaml"), "--out", str(out), "--work-dir", str(work)),
        *("--seeds", "2", "--published-loop", "--jobs", "2", "--plot"),
        *("--notes", str(tmp_path / "notes.md"), "--", "--trainer.log_every_n_steps", "1"),
    ]
    assert reproduce.main(argv) == 1  # the Fashion-MNIST runs failed

    text = out.read_text()
    rows = rows_of(text)
    assert {figure for (_, data, figure) in rows if data == "mnist"} == {"test/sse @ 1", "test/sse @ 2"}
    first = rows[("gon", "mnist", "test/sse @ 1")]
    assert first[3].endswith("(2)") and first[4].endswith("(2)")  # two seeds of ours and of the published loop
    assert first[5] == "3.63"  # the published value beside them
    assert float(first[9]) > 0 and float(first[10]) > 0  # seconds per epoch of both
    assert "| gon | fashion | failed | ours seed 0: fit failed:" in text and "corrupt" in text
    assert out.with_suffix(".png").is_file()
    assert "## Misses beyond the seed spread and 15%" in text and text.rstrip().endswith("Hand-written.")

    # the same seed: our CLI run from the config is the published loop on its PIL pipeline (same initial weights,
    # same batches, same images), up to float32 rounding; measured on real MNIST: 1e-7 relative after 1,874 steps
    # (reports/2026-11-23-cpu-mnist.md), while two seeds differ by about 20%
    paired = table_rows(text, 7)
    assert len(paired) == 4 and all(float(row[6]) < 1e-3 for row in paired)

    cell = grid.published_cells(published, ["gon"], ["mnist"], mnist_root)[0]
    seeds = []
    for seed in (0, 1):
        run = grid.Run("ours", seed)
        run_dir = next((work / "gon_mnist" / f"ours-seed{seed}").iterdir())
        grid.read_curve(cell, run, run_dir, 4)
        assert sorted(run.values) == [1, 2] and run.seconds[2] >= run.seconds[1] > 0
        # the curve's last point is the validation pass on the test split; `gon-lightning test` on last.ckpt agrees
        tested = json.loads((run_dir / "test_metrics.json").read_text())["metrics"]["test/sse"]
        assert run.values[2] == pytest.approx(tested, rel=1e-3)
        seeds.append(run.values[1])
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["TrainingClock"]
        # the clock goes on from there when the run is resumed (the CSV holds the float32 the logger got)
        assert state["elapsed"] == pytest.approx(run.seconds[2], rel=1e-5)
    assert seeds[0] != seeds[1]  # the seeds are different runs
    assert float(first[3].split(" ± ")[0]) == pytest.approx(sum(seeds) / 2, rel=1e-2)
    loop = json.loads((work / "gon_mnist" / "loop-seed1.json").read_text())
    assert loop["seed"] == 1 and loop["parameters"] == 303_697 and set(loop["epochs"]) == {"1", "2"}

    # a rerun with the same work folder and budget reuses the finished runs instead of training again
    log = work / "gon_mnist" / "ours-seed0.log"
    before = log.stat().st_mtime
    assert reproduce.main(argv) == 1
    assert log.stat().st_mtime == before and "4 of 4 runs reused" in out.read_text()

    # the report alone, from what the work folder holds: an interrupted run counts at the epochs it reached
    metrics = next((work / "gon_mnist" / "ours-seed1").glob("*/logs/version_0/metrics.csv"))
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(line for line in lines if line.split(",")[1] != "7") + "\n")  # epoch 2 never ran
    assert reproduce.main([*argv[: argv.index("--")], "--report-only"]) == 0
    rows = rows_of(out.read_text())
    assert rows[("gon", "mnist", "test/sse @ 1")][3].endswith("(2)")
    assert rows[("gon", "mnist", "test/sse @ 2")][3].endswith("(1)")  # never more runs than reached it
    assert log.stat().st_mtime == before


def test_the_comparison_report_shows_each_sampler_beside_the_floor(tmp_path):
    args = reproduce.parse(["--compare", "--models", "ae", "gopt", "--datasets", "mnist5k", "--seeds", "2"])
    assert args.models == ["ae", "gopt"] and args.steps == 250 and args.seed_list == [0, 1]

    def result(fd: float) -> dict:
        figures = {"fd_lenet": fd, "precision": 0.5, "recall": 0.25, "density": 0.4, "coverage": 0.3}
        return {"figures": list(figures), **figures, "floor": {**figures, "fd_lenet": 1.0}}

    runs = [
        samples.Trained("ae", "mnist5k", seed, sse=10.0 + seed, parameters=607_649, fit_s=5.0,
                          quality={"gaussian": result(30.0 + seed), "gmm": result(20.0 + seed)})
        for seed in (0, 1)
    ]  # fmt: skip
    runs.append(samples.Trained("gopt", "mnist5k", 0, parameters=42_353, quality={"optimised": result(50.0)}))
    runs.append(samples.Trained("gopt", "mnist5k", 1, error="fit failed: boom"))
    text = samples.compare_report(runs, args, 60.0)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in text.splitlines()}
    assert "| 607,649 | 10.5 ± 0.707 (2) | 30.5 ± 0.707 (2) |" in rows[("ae", "gaussian", "mnist5k")]
    assert "| 20.5 ± 0.707 (2) |" in rows[("ae", "gmm", "mnist5k")]
    assert "| - | 50 (1) |" in rows[("gopt", "optimised", "mnist5k")]  # no encoder: no SSE
    assert "| 1 | 0.5 | 0.25 |" in rows[("real test images", "-", "mnist5k")]  # the floor
    assert "seed 1: fit failed: boom" in rows[("gopt", "failed", "mnist5k")]
    with pytest.raises(SystemExit):
        reproduce.parse(["--compare", "--model-flags", "nocolon"])


def test_the_comparison_reports_learned_priors_with_their_training_time_and_copying(tmp_path):
    args = reproduce.parse(["--compare", "--models", "gon", "--datasets", "mnist5k", "--seeds", "2",
                            "--samplers", "gmm", "diffusion", "--prior-steps", "300",
                            "--prior-flags", "diffusion:--model.init_args.hidden=256"])  # fmt: skip
    assert args.prior_steps == 300 and args.prior_flags == [("diffusion", "--model.init_args.hidden=256")]
    assert samples.samplers_of("gon", args) == ("gmm", "diffusion")  # --samplers keeps the model's order
    assert samples.samplers_of("vae", args) == ("gmm", "diffusion")
    assert "diffusion" in samples.COMPARE_MODELS["implicit_gon"] and "flow" in samples.COMPARE_MODELS["vgon"]
    assert samples.COMPARE_MODELS["gopt"] == ("optimised",)  # no latents: no learned prior

    def result(fd: float, ratio: float, latent: dict | None = None) -> dict:
        figures = {"fd_lenet": fd, "precision": 0.5, "recall": 0.25, "density": 0.4, "coverage": 0.3}
        figures |= {"copy_ratio": ratio, "copying_z": 0.5, **(latent or {})}
        return {"figures": list(figures), **figures, "floor": {**figures, "fd_lenet": 1.0}}

    latent = {"latent_copy_ratio": 0.9}
    runs = [
        samples.Trained("gon", "mnist5k", seed, sse=10.0, parameters=303_697, fit_s=5.0,
                        quality={"gmm": result(400.0, 1.0), "diffusion": result(100.0 + seed, 1.1, latent)},
                        prior_s={"diffusion": 60.0 + 2 * seed})
        for seed in (0, 1)
    ]  # fmt: skip
    text = samples.compare_report(runs, args, 60.0)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.endswith("| copy_ratio | copying_z | latent_copy_ratio | fit s | prior s |")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in text.splitlines()}
    assert "| 10 ± 0 (2) | 100 ± 0.707 (2) |" in rows[("gon", "diffusion", "mnist5k")]
    diffusion = "| 1.1 ± 0 (2) | 0.5 ± 0 (2) | 0.9 ± 0 (2) | 5 ± 0 (2) | 61 ± 1.41 (2) |"
    assert rows[("gon", "diffusion", "mnist5k")].endswith(diffusion)
    # a fitted sampler: no prior's latents, no prior's time
    assert rows[("gon", "gmm", "mnist5k")].endswith("| 1 ± 0 (2) | 0.5 ± 0 (2) | - | 5 ± 0 (2) | - |")
    assert "diffusion: `--model.init_args.hidden=256`" in text and "300 optimizer steps" in text
    for wrong in (["--prior-flags", "gmm:--x=1"], ["--prior-flags", "diffusion"], ["--prior-steps", "0"]):
        with pytest.raises(SystemExit):
            reproduce.parse(["--compare", *wrong])


@pytest.mark.slow
def test_a_tiny_comparison_runs_through_fit_test_and_evaluate(tmp_path):
    # a fitted sampler (gmm) and both learned priors (diffusion, flow: prior_flow.yaml's only run in the suite);
    # gaussian is evaluated as gmm is (`evaluate --sampler`), and test_samplers.py draws it: --samplers leaves it out
    out, work = tmp_path / "samples.md", tmp_path / "work"
    argv = [
        *("--compare", "--models", "ae", "--datasets", "mnist5k", "--data-root", str(tmp_path / "data")),
        *("--samplers", "gmm", "diffusion", "flow"),
        *("--steps", "4", "--seeds", "1", "--num-samples", "64", "--out", str(out), "--work-dir", str(work)),
        *("--model-flags", "ae:--model.init_args.nz=8", "--model-flags", "ae:--model.init_args.gmm_components=2"),
        *("--prior-steps", "3", "--prior-flags", "diffusion:--model.init_args.hidden=16"),
        *("--prior-flags", "diffusion:--model.init_args.sample_steps=2"),
        *("--prior-flags", "flow:--model.init_args.hidden=8"),
    ]
    assert reproduce.main(argv) == 0
    text = out.read_text()
    for sampler in ("gmm", "diffusion", "flow"):
        assert f"| ae | {sampler} | mnist5k |" in text
    assert "| ae | gaussian |" not in text
    assert "| real test images | - | mnist5k |" in text and "fd_lenet" in text
    run = next(path for path in (work / "ae_mnist5k" / "seed0").iterdir() if path.is_dir())  # beside fit.json
    assert not (run / "quality-gaussian").exists()
    gmm = json.loads((run / "quality-gmm" / "sample_quality.json").read_text())
    assert gmm["sampler"] == "gmm" and gmm["num_samples"] == 64
    diffusion = json.loads((run / "quality-diffusion" / "sample_quality.json").read_text())
    assert diffusion["drawn_by"] == "diffusion"  # through the prior trained post hoc on this run's checkpoint
    fitted = json.loads((run / "priors" / "flow" / "prior.json").read_text())
    assert fitted["steps"] == 3 and fitted["flags"] == ["--model.init_args.hidden=8"] and fitted["train_s"] > 0
    log = work / "ae_mnist5k" / "seed0.log"
    before = log.stat().st_mtime
    assert reproduce.main(argv) == 0  # a rerun reuses the trained, tested and evaluated run
    assert log.stat().st_mtime == before
