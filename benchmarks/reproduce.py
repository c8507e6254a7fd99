"""Regenerate the published GON tables: train each model/dataset cell with the normal CLI, report ours beside theirs.

    python benchmarks/reproduce.py --preset cpu                  # GON, detached GON, Conv AE; < 15 min on 2 cores
    python benchmarks/reproduce.py --preset gpu --epochs 10      # every published cell
    python benchmarks/reproduce.py --models gon vgon --datasets mnist cifar --epochs 20 --plot
    python benchmarks/reproduce.py --preset cpu -- --trainer.precision bf16-mixed   # flags after -- reach every run

Each cell is `gon-lightning fit --config configs/<model>_<data>.yaml` in a subprocess (the users' code path), with
a CSV logger and validation on the test split every *reference epoch* (the reference's training-set size // 64
optimizer steps, so a stand-in dataset is compared after the same number of steps), then `gon-lightning test` on
the last checkpoint. Test values are read at the epochs the published curves use (1, 2, 5, 10, 20, 50, 100) and
at the end, and written to reports/<date>-<device>.md beside the published ones (benchmarks/published.yaml),
with the ratio, a 15% verdict, the explanation known for each miss and the training time per reference epoch.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = Path(__file__).with_name("published.yaml")
CURVE_EPOCHS = (1, 2, 5, 10, 20, 50, 100)
TOLERANCE = 0.15


@dataclass(frozen=True)
class Dataset:
    config: str  # the configs/<model>_<config>.yaml suffix
    reference: str  # the published dataset its numbers are compared with
    folder: str  # folder under --data-root that holds its files
    data_class: str | None = None  # replaces the config's DataModule
    note: str = ""  # why its numbers may differ from the reference's, for every cell that uses it


DATASETS = {
    "mnist": Dataset("mnist", "mnist", "MNIST"),
    "fashion": Dataset("fashion", "fashion", "FashionMNIST"),
    "cifar": Dataset("cifar", "cifar", "cifar-10-batches-py"),
    "coil20": Dataset("coil20", "coil20", "coil-20-proc"),
    "mnist5k": Dataset(
        "mnist",
        "mnist",
        "MNIST5k",
        data_class="MNIST5kDataModule",
        note=(
            "MNIST5k stands in for MNIST (no download needed): 4,000 training digits seen ~15 times per reference "
            "epoch instead of 60,000 seen once, and a 1,000-digit test split"
        ),
    ),
}
MODELS = ("gon", "gon_detached", "ae", "vgon", "vae", "implicit_gon")
PRESETS = {
    # minutes on 2 CPU cores; MNIST joins when its files are under --data-root
    "cpu": {"models": ["gon", "gon_detached", "ae"], "datasets": ["mnist5k", "mnist?"], "epochs": 2},
    # every published cell
    "gpu": {"models": list(MODELS), "datasets": ["mnist", "fashion", "cifar", "coil20"], "epochs": 10},
}


@dataclass
class Cell:
    model: str
    dataset: str
    metric: str  # the published reconstruction figure: sse, or mse for the implicit GON
    published: dict
    ours: dict[int, float] = field(default_factory=dict)  # reference epoch -> our test value
    seconds: dict[int, float] = field(default_factory=dict)  # reference epoch -> training seconds so far
    final: dict[str, float] = field(default_factory=dict)  # test/* from `gon-lightning test` on the last checkpoint
    run_dir: Path | None = None
    error: str = ""
    reused: bool = False  # taken from an earlier run in the same --work-dir

    @property
    def name(self) -> str:
        return f"{self.model}_{self.dataset}"


def published_cells(published: dict, models: list[str], datasets: list[str], root: Path) -> list[Cell]:
    cells = []
    for model in models:
        for spec in datasets:
            optional = spec.endswith("?")
            dataset = spec.rstrip("?")
            if dataset not in DATASETS:
                raise SystemExit(f"reproduce: unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
            if model not in MODELS:
                raise SystemExit(f"reproduce: unknown model {model!r}; choose from {', '.join(MODELS)}")
            entry = published["results"].get(model, {}).get(DATASETS[dataset].reference)
            if entry is None or (optional and not (root / DATASETS[dataset].folder).is_dir()):
                continue  # nothing published to compare with, or optional files absent
            metric = "mse" if "mse" in entry else "sse"
            cells.append(Cell(model, dataset, metric, entry))
    return cells


def reference_epoch_steps(published: dict, dataset: str) -> int:
    return published["train_images"][DATASETS[dataset].reference] // published["batch_size"]


def run_cell(cell: Cell, published: dict, args: argparse.Namespace, work: Path) -> None:
    dataset = DATASETS[cell.dataset]
    steps, epochs = reference_epoch_steps(published, cell.dataset), args.epochs
    runs_root = work / cell.name
    fit = [
        *("fit", "--config", str(ROOT / "configs" / f"{cell.model}_{dataset.config}.yaml")),
        *(["--data", dataset.data_class] if dataset.data_class else []),
        *("--data.init_args.root", str(args.data_root)),
        *("--runs_root", str(runs_root)),
        *("--trainer.logger", "pytorch_lightning.loggers.CSVLogger"),
        *("--trainer.max_epochs", "-1", "--trainer.max_steps", str(epochs * steps)),
        *("--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(steps)),
        *("--images.every_n_epochs", "0"),  # panels cost time the reference did not spend
        *args.extra,
    ]
    log = work / f"{cell.name}.log"
    finished = [p for p in sorted(runs_root.glob("*/test_metrics.json")) if trained_steps(p.parent) == epochs * steps]
    if finished:  # a rerun with the same --work-dir and budget reuses finished cells (an interrupted grid goes on)
        cell.run_dir = finished[-1].parent
        read_curve(cell, cell.run_dir, steps)
        cell.final = json.loads(finished[-1].read_text())["metrics"]
        cell.reused = True
        return
    shutil.rmtree(runs_root, ignore_errors=True)  # an unfinished attempt starts over
    if not gon_lightning(fit, log):
        cell.error = f"fit failed: {last_line(log)} (log: {log})"
        return
    cell.run_dir = next(runs_root.iterdir())
    read_curve(cell, cell.run_dir, steps)
    test = [
        *("test", "--config", str(cell.run_dir / "config.yaml")),
        *("--ckpt_path", str(cell.run_dir / "checkpoints" / "last.ckpt")),
        *("--trainer.logger", "false"),
        *args.extra,
    ]
    if not gon_lightning(test, log, append=True):
        cell.error = f"test failed: {last_line(log)} (log: {log})"
        return
    cell.final = json.loads((cell.run_dir / "test_metrics.json").read_text())["metrics"]


def trained_steps(run_dir: Path) -> int | None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return config.get("trainer", {}).get("max_steps")


def gon_lightning(arguments: list[str], log: Path, append: bool = False) -> bool:
    with log.open("a" if append else "w") as out:
        out.write("$ gon-lightning " + " ".join(arguments) + "\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "gon_lightning", *arguments], stdout=out, stderr=out)
    return done.returncode == 0


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def read_curve(cell: Cell, run_dir: Path, steps: int) -> None:
    """Test values and training seconds at every validation (on the test split)."""
    rows = list(csv.DictReader(next(run_dir.glob("logs/version_*/metrics.csv")).open()))
    key = f"val/{cell.metric}"
    for row in rows:
        if row.get(key):
            epoch = round((int(row["step"]) + 1) / steps)  # validation rows carry the interval's last step index
            cell.ours[epoch] = float(row[key])
            cell.seconds[epoch] = float(row["time/train_s"])


# --- the report ---


def ratio_cell(ours: float | None, theirs: float | None) -> tuple[str, str]:
    """(ratio, verdict) for a lower-is-better figure."""
    if ours is None or theirs is None:
        return "", ""
    ratio = ours / theirs
    if abs(ratio - 1) <= TOLERANCE:
        return f"{ratio:.2f}", "match"
    return f"{ratio:.2f}", "better" if ratio < 1 else "worse"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def published_at(cell: Cell, metric: str, epoch: int, split: str = "test") -> float | None:
    entry = cell.published.get(metric, {})
    if split == "test" and epoch in entry.get("curve", {}):
        return entry["curve"][epoch]
    final = entry.get("final", {})
    return final.get(split) if final.get("epochs") == epoch else None


def seconds_per_epoch(cell: Cell) -> float | None:
    if not cell.seconds:
        return None
    last = max(cell.seconds)
    return cell.seconds[last] / last


class Row(NamedTuple):
    figure: str
    ours: float
    published: float | None


def cell_rows(cell: Cell, epochs: int) -> list[Row]:
    """One row per compared value: the curve epochs reached before the end, then the final test figures."""
    metric = cell.metric
    rows = [
        Row(f"test/{metric} @ {e}", cell.ours[e], published_at(cell, metric, e))
        for e in CURVE_EPOCHS
        if e in cell.ours and e < epochs
    ]
    for name in (metric, "elbo"):
        if f"test/{name}" in cell.final:
            final = cell.final[f"test/{name}"]
            rows.append(Row(f"test/{name} @ {epochs} (final)", final, published_at(cell, name, epochs)))
    return rows


def report(cells: list[Cell], args: argparse.Namespace, published: dict, wall: float) -> str:
    device = device_description()
    reused = sum(cell.reused for cell in cells)
    reused = f"; {reused} of {len(cells)} cells reused from earlier runs in the work folder" if reused else ""
    lines = [
        f"# Reproduction report: {datetime.date.today().isoformat()}, {device}",
        "",
        f"Command: `python benchmarks/reproduce.py {args.command}` ({wall / 60:.1f} min in all{reused})  ",
        f"Software: {software()}  ",
        f"Published numbers: `benchmarks/published.yaml` ({published['source']}).",
        "",
        "How to read it: every value is measured on the test split under the reference protocol (BatchNorm with "
        "batch statistics, batch 64). Curve values come from the validation pass that `fit` runs on the test "
        "split after each *reference epoch* (the reference's training-set size // 64 steps); the final values "
        "from `gon-lightning test` on the last checkpoint. ratio = ours / published (lower is better for every "
        f"figure); `match` is within {TOLERANCE:.0%}. "
        "`s/epoch` is training time per reference epoch, validation excluded.",
        "",
        "| model | data | figure | ours | published | ratio | verdict | s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for cell in cells:
        if cell.error:
            lines.append(f"| {cell.model} | {cell.dataset} | failed | {cell.error} | | | | |")
            continue
        per_epoch, missed = seconds_per_epoch(cell), []
        for row in cell_rows(cell, args.epochs):
            ratio, verdict = ratio_cell(row.ours, row.published)
            lines.append(
                f"| {cell.model} | {cell.dataset} | {row.figure} | {fmt(row.ours)} | {fmt(row.published)} "
                f"| {ratio} | {verdict} | {fmt(per_epoch)} |"
            )
            if verdict in ("better", "worse"):
                missed.append(f"{row.figure} x{ratio} ({verdict})")
        if missed:
            note = DATASETS[cell.dataset].note
            known = f"Known difference from the reference: {note}." if note else "No known difference: investigate."
            misses.append(f"- **{cell.model} / {cell.dataset}**: {'; '.join(missed)}. {known}")
    lines += ["", "## Misses beyond 15%", ""] + (misses or ["None."])
    if args.notes:
        lines += ["", args.notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [c for c in cells if c.ours]
    if not drawn:
        return
    columns = min(3, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)
    for ax, cell in zip(axes.flat, drawn, strict=False):
        epochs = sorted(cell.ours)
        ax.plot(epochs, [cell.ours[e] for e in epochs], "o-", label="ours")
        curve = cell.published.get(cell.metric, {}).get("curve", {})
        if curve:
            ax.plot(list(curve), list(curve.values()), "s--", label="published")
        ax.set(title=f"{cell.model} / {cell.dataset}", xlabel="reference epoch", ylabel=f"test {cell.metric}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend()
    for ax in list(axes.flat)[len(drawn) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def device_slug() -> str:
    import torch

    if torch.cuda.is_available():
        return "-".join(torch.cuda.get_device_name(0).lower().replace("nvidia", "").split())
    return "cpu"


def software() -> str:
    import pytorch_lightning
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return (
        f"torch {torch.__version__}, pytorch-lightning {pytorch_lightning.__version__}, "
        f"gon-lightning {commit.stdout.strip() or 'unknown commit'}"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    given, extra = list(argv), []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, help="models, datasets and epochs at once (the options override)")
    parser.add_argument("--models", nargs="+", help=f"from {', '.join(MODELS)}")
    parser.add_argument("--datasets", nargs="+", help=f"from {', '.join(DATASETS)}; a trailing ? means 'if present'")
    parser.add_argument("--epochs", type=int, help="budget in reference epochs")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data", help="where the datasets are (default data/)")
    parser.add_argument("--out", type=Path, help="report path (default reports/<date>-<device>.md)")
    parser.add_argument("--work-dir", type=Path, help="run folders and logs (default runs/reproduce-<time>)")
    parser.add_argument("--published", type=Path, default=PUBLISHED, help="the published numbers (YAML)")
    parser.add_argument("--notes", type=Path, help="a Markdown file appended to the report (analysis of misses)")
    parser.add_argument("--plot", action="store_true", help="also write the curves, ours and published, as PNG")
    args = parser.parse_args(argv)
    args.command = " ".join(given)
    preset = PRESETS.get(args.preset, {})
    args.models = args.models or preset.get("models")
    args.datasets = args.datasets or preset.get("datasets")
    args.epochs = args.epochs or preset.get("epochs")
    if not (args.models and args.datasets and args.epochs):
        parser.error("choose --preset, or --models, --datasets and --epochs")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if any("val_fraction" in arg for arg in extra):
        parser.error("curves are read from validation on the test split: data.val_fraction must stay 0")
    if args.notes and not args.notes.is_file():
        parser.error(f"--notes {args.notes}: no such file")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    published = yaml.safe_load(args.published.read_text())
    cells = published_cells(published, args.models, args.datasets, args.data_root)
    if not cells:
        raise SystemExit(f"reproduce: nothing published for these models and datasets in {args.published}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = (args.work_dir or ROOT / "runs" / f"reproduce-{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for cell in cells:
        began = time.perf_counter()
        print(f"{cell.name}: {args.epochs} reference epochs ...", flush=True)
        run_cell(cell, published, args, work)
        outcome = cell.error or "  ".join(f"{k} {v:.4g}" for k, v in cell.final.items())
        print(f"{cell.name}: {outcome} ({time.perf_counter() - began:.0f} s)", flush=True)
    out = args.out or ROOT / "reports" / f"{datetime.date.today().isoformat()}-{device_slug()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(cells, args, published, time.perf_counter() - start))
    if args.plot:
        plot(cells, out.with_suffix(".png"))
    print(f"report: {out}  (runs: {work})")
    return 1 if any(cell.error for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
