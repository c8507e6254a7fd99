"""benchmarks/throughput.py runs end to end (a few steps, no `fit` subprocess) and reports every contender."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_copy

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_reports_each_contender_and_the_trainers_floor(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--no-fit", "--root", str(tmp_path)]
    command += ["--rounds", "1", "--steps", "2", "--warmup", "1", "--nz", "4", "--ngf", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("(a) plain loop", "(b) plain loop", "(L) plain loop's step as a LightningModule", "(c) GON"):
        assert label in done.stdout
    assert "L/b = " in done.stdout and "c/L = " in done.stdout
    assert "(d)" not in done.stdout  # --no-fit leaves the user's `fit` out


@pytest.fixture(scope="module")
def gpu_check_dry_run(tmp_path_factory: pytest.TempPathFactory, _mnist_files: Path) -> tuple[Path, str]:
    """`benchmarks/gpu_check.py --dry-run` once: its folder and its output. The dry run runs benchmark scripts at
    tiny sizes (size_throughput.py, fp16_batchnorm.py, ...): their tests read its log rather than run them again."""
    work = tmp_path_factory.mktemp("gpu_check")
    out, data = work / "out", fresh_copy(_mnist_files, work)
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--jobs", "2", "--out", str(out)]
    # conftest keeps W&B offline per test, which a module fixture runs before: here too
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [*command, "--data", str(data)], capture_output=True, text=True, timeout=600, cwd=work, env=env
    )
    return out, done.stdout[-2000:] + done.stderr[-2000:] + f"\n(exit {done.returncode})"


def check_output(out: Path, name: str) -> str:
    """One check's output in the dry run's gpu_check.log (each check's begins with "===== NAME: COMMAND")."""
    log = (out / "gpu_check.log").read_text()
    parts = re.split(r"^===== ([\w-]+): .*$", log, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))[name]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_check_and_writes_its_report(gpu_check_dry_run):
    """The prepared GPU check stays working: `--dry-run` runs each check on the CPU at a tiny size."""
    out, output = gpu_check_dry_run
    assert output.endswith("(exit 0)"), output
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    expected = {"cuda-tests", "throughput-b64-32-true", "throughput-b512-bf16-mixed", "size-throughput", "epoch-end"}
    assert expected | {"mnist-epoch", "fp16-batchnorm", "prior-posthoc", "prior-online", "prior-sample"} <= set(
        statuses
    )
    assert set(statuses.values()) == {"ok"}, statuses
    figures = {check["name"]: check["figures"] for check in report["checks"]}
    rates = {"(a) img/s", "(b) img/s", "(L) img/s", "(c) GON img/s", "(c) ConvAutoencoder img/s", "(d) img/s"}
    assert rates | {"GON c/L", "VariationalGON c/b", "d/b"} <= set(figures["throughput-b64-32-true"])
    assert figures["mnist-epoch"]["epoch s"] > 0
    variants = ("fp32", "batch", "batch-fp32", "group")
    assert {f"{v}: last loss, loss scale, skipped steps" for v in variants} == set(figures["fp16-batchnorm"])
    assert {"32px (b) (L) (c) img/s, c/b, c/L", "64px (b) (L) (c) img/s, c/b, c/L"} <= set(figures["size-throughput"])
    assert "| throughput-b64-32-true | ok |" in (out / "gpu_check.md").read_text()
    assert figures["prior-posthoc"]["Lightning/plain"] > 0 and "online share of GON step %" in figures["prior-online"]
    assert {"sampler diffusion", "sampler flow"} <= set(figures["prior-sample"])


@pytest.mark.parametrize("side_by_side", [[], ["--dry-run", "--jobs", "2"]], ids=["one-by-one", "jobs-2"])
def test_gpu_check_reports_a_failing_check_by_name(tmp_path, monkeypatch, capsys, side_by_side):
    """A check that fails is named, with its last lines, and the command exits non-zero; the others still run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    checks = [
        gpu_check.Check("broken", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], timeout=30),
        gpu_check.Check("fine", [sys.executable, "-c", "print('ok')"], timeout=30),
    ]
    monkeypatch.setattr(gpu_check, "all_checks", lambda args, root, work: checks)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path), *side_by_side])
    with pytest.raises(SystemExit, match="failed checks: broken"):
        gpu_check.main()
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| broken | failed (exit 3) |" in report and "| fine | ok |" in report and "boom" in report
    log = (tmp_path / "gpu_check.log").read_text()
    assert "===== broken: " in log and "===== fine: " in log and "boom" in log
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path), "--jobs", "2"])  # timed on a GPU
    with pytest.raises(SystemExit, match="2"):
        gpu_check.main()
    assert "--jobs: a positive number, above 1 only with --dry-run" in capsys.readouterr().err


@pytest.mark.slow  # a child process per size, each importing torch and Lightning
def test_implicit_memory_reports_each_size():
    command = [sys.executable, str(ROOT / "benchmarks" / "implicit_memory.py"), "--sizes", "8"]
    command += ["--points", "256", "--batch", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| 8 ")]
    assert row.count("GiB") == 2


@pytest.mark.slow  # three Trainer runs per size: read from the GPU check's dry run, which runs this script
def test_size_throughput_reports_each_size(gpu_check_dry_run):
    # size_throughput.py --sizes 32 64 --rounds 1 --steps 1 --nz 4 --ngf 1 --threads 1 --clock cpu (warm-up 1)
    output = check_output(gpu_check_dry_run[0], "size-throughput")
    assert "1 steps (+1 warm-up), cpu clock" in output
    rows = [line for line in output.splitlines() if line.startswith(("| 32 |", "| 64 |"))]
    assert len(rows) == 2 and all(row.count("|") == 7 for row in rows)


@pytest.mark.slow
def test_sample_quality_benchmark_reports_each_cost(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "sample_quality.py"), "--threads", "1", "--skip-loop"]
    command += ["--inception-images", "2", "--n", "200", "--dims", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("lenet", "resnet", "inception", "d     8: P/R/D/C", "peak"):
        assert label in done.stdout


def test_divergence_check_benchmark_reports_both_contenders_and_their_ratio(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "divergence_check.py"), "--root", str(tmp_path)]
    command += ["--blocks", "2", "--block", "2", "--warmup", "1", "--nz", "4", "--ngf", "1", "--threads", "1"]
    done = subprocess.run([*command, "--check-every", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 (n), 2 (g), alternating" in done.stdout and "g/n = " in done.stdout
    assert "the guard's hooks: " in done.stdout


@pytest.mark.slow
def test_fp16_batchnorm_benchmark_shows_the_paper_gon_skipping_every_step(gpu_check_dry_run):
    """docs/performance.md's finding, on the CPU: under fp16 AMP the paper's BatchNorm GON overflows at every step
    even from a loss scale of 64 (at which BatchNorm in fp32, and GroupNorm, take every step). Read from the GPU
    check's dry run, which runs fp16_batchnorm.py --steps 4 --init-scale 64 with every variant."""
    output = check_output(gpu_check_dry_run[0], "fp16-batchnorm")
    assert "4 steps on cpu" in output
    table = re.findall(r"^(\S+)\s+[\d.naif]+\s+\S+\s+(\d+)$", output, re.M)  # variant, ..., steps skipped
    skipped = {variant: int(steps) for variant, steps in table}
    assert skipped == {"fp32": 0, "batch": 4, "batch-fp32": 0, "group": 0}


def test_latent_format_compares_safetensors_and_parquet():
    command = [sys.executable, str(ROOT / "benchmarks" / "latent_format.py"), "--rows", "500", "--nz", "4"]
    done = subprocess.run([*command, "--shard", "200", "--repeats", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "safetensors  write" in done.stdout and "parquet      write" in done.stdout


@pytest.mark.slow
def test_encode_speed_reports_the_ratio_and_the_probes_cost(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "encode_speed.py"), "--rounds", "1", "--steps", "2"]
    done = subprocess.run([*command, "--root", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio b/a" in done.stdout and "encode's latents == plain loop's: True" in done.stdout
    assert "the probe's hook itself" in done.stdout
