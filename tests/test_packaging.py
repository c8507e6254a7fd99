"""The package as `pip install` leaves it: a wheel with the configs inside, usable from any directory."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def checkout_only(folder: str, names: list[str]) -> set[str]:
    """What a copy of the checkout leaves out: local environments, outputs and caches."""
    local = {".git", ".venv", "runs", "data", "build", "wandb"} if Path(folder) == REPO else set()
    return {name for name in names if name in local or name == "__pycache__" or name.endswith((".egg-info", "_cache"))}


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel built (offline, no build isolation) from a copy of the checkout, and the build's output."""
    root = tmp_path_factory.mktemp("wheel")
    source = Path(shutil.copytree(REPO, root / "source", ignore=checkout_only, symlinks=True))
    out = run(
        sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", root, ".", cwd=source
    )
    (path,) = root.glob("gon_lightning-*.whl")
    return path, out


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; torch and the other dependencies come from this environment."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel[0], cwd=venv)
    (target,) = venv.glob("lib/python*/site-packages")
    dependencies = [p for p in (*site.getsitepackages(), *sys.path) if p.endswith("site-packages")]
    (target / "zz_dependencies.pth").write_text("\n".join(dict.fromkeys(dependencies)) + "\n")
    return venv


@pytest.mark.slow
def test_wheel_builds_without_setuptools_warnings(wheel):
    _, out = wheel
    assert "SetuptoolsDeprecationWarning" not in out and "License classifiers" not in out, out


@pytest.mark.slow
def test_installed_wheel_finds_its_configs_from_any_directory(installed: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["WANDB_MODE"] = "offline"
    where = run(
        installed / "bin" / "python", "-c", "import gon_lightning; print(gon_lightning.__file__)", cwd=elsewhere
    )
    assert where.strip().startswith(str(installed)), where  # the wheel's copy, not the checkout
    gon_lightning = installed / "bin" / "gon-lightning"
    config = yaml.safe_load(
        run(gon_lightning, "fit", "--config", "vgon_cifar", "--print_config", cwd=elsewhere, env=env)
    )
    assert config["model"]["class_path"].endswith("VariationalGON") and config["data"]["class_path"].endswith(
        "CIFAR10DataModule"
    )
    run(
        gon_lightning,
        *("fit", "--config", "quickstart", "--data.root", elsewhere / "data", "--trainer.fast_dev_run", "true"),
        *("--trainer.logger", "false"),
        cwd=elsewhere,
        env=env,
    )
    assert list((elsewhere / "runs").glob("gon-mnist5k-*"))


@pytest.mark.slow
def test_wheel_ships_the_mnist5k_feature_extractor(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel[0]).namelist()
    assert "gon_lightning/metrics/weights/lenet-mnist5k.safetensors" in names
