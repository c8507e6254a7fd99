"""Prepare what a lent GPU machine lacks, so its minutes go to measuring, not installing.

The GPU machine reaches no network. Its Python (3.12) has torch, torchvision, Lightning, torchmetrics, numpy,
pandas, scikit-learn, matplotlib ... but not jsonargparse, wandb or mlxtend. This script, run here with the package
registries reachable, fills the folder `.gpu/` of the checkout (ignored by git; name it in the device tool's carry):

    .gpu/whl/         wheels for CPython 3.12 on x86-64 Linux of what the project needs and the machine lacks
    .gpu/data/MNIST/raw/*.gz   the real MNIST (gzip: a quarter of the size), when --mnist names its raw/ folder

and prints the one device command that installs the wheels, unpacks MNIST and runs benchmarks/gpu_check.py:

    python benchmarks/gpu_carry.py --mnist DATA/MNIST/raw
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu"
# what the project needs beyond the GPU machine's image, at the versions this checkout is tested with
NEEDED = ["jsonargparse[signatures]==4.53.0", "wandb==0.31.0", "mlxtend==0.25.0"]
# the GPU machine's packages (the device tool's KINDS.md, 2026-11-17); their wheels are not carried
ON_DEVICE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython einops filelock
fonttools fsspec h11 h5py httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict narwhals
networkx numpy packaging pandas pillow pip pluggy protobuf psutil pyarrow pygments pyparsing pytest python-dateutil
pytorch-lightning pyyaml regex requests rich scikit-image scikit-learn scipy setuptools six sympy threadpoolctl
tifffile torch torchmetrics torchvision tqdm triton urllib3 wheel xxhash yarl zipp""".split()  # noqa: SIM905
# carried although the machine has them: pydantic 2.14 needs a newer typing_extensions than the image may hold
ALWAYS = {"typing-extensions"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PLATFORMS += ["manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux1_x86_64", "any"]
INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
    ".gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1; "
    "for f in .gpu/data/MNIST/raw/*.gz; do gunzip -kf $f; done; "
)


def distribution(wheel: str) -> str:
    return re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()


def fetch_wheels(target: Path) -> list[Path]:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(target), *NEEDED]
    subprocess.run(command, check=True)
    kept = []
    for wheel in sorted(target.glob("*.whl")):
        if distribution(wheel.name) in ON_DEVICE and distribution(wheel.name) not in ALWAYS:
            wheel.unlink()
        else:
            kept.append(wheel)
    return kept


def pack_mnist(raw: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        for name in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):
            source = raw / name
            if not source.is_file():
                raise SystemExit(f"{source} is missing: --mnist names a folder with MNIST's four raw idx files")
            with open(source, "rb") as src, gzip.open(target / f"{name}.gz", "wb", compresslevel=6) as out:
                shutil.copyfileobj(src, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, help="a folder holding MNIST's raw idx files (the real-data check)")
    args = parser.parse_args()
    wheels = fetch_wheels(CARRY / "whl")
    if args.mnist:
        pack_mnist(args.mnist, CARRY / "data" / "MNIST" / "raw")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file()) / 2**20
    print(f"{len(wheels)} wheels in {CARRY / 'whl'}; .gpu/ holds {size:.1f} MiB (the device tool carries 64 MiB)")
    data = " --data .gpu/data" if args.mnist else ""
    print(
        '\ndevice command (carry [".gpu"], timeout_s 600):\n'
        f"{INSTALL}PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT{data}"
    )


if __name__ == "__main__":
    main()
