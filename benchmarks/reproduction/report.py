"""The report of the published grid: ours beside the published numbers and the published loop, the verdicts
against the seeds' spread, the same-seed pairs and the curves; and the machine and software it ran on."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import NamedTuple

from reproduction.grid import CURVE_EPOCHS, DATASETS, Cell, Run, has_loop, published_at
from reproduction.subprocesses import ROOT

TOLERANCE = 0.15


class Spread(NamedTuple):
    mean: float
    sd: float  # sample standard deviation over seeds (0 for one run)
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        if not values:
            return None
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), sd, min(values), max(values), len(values))


def verdict(ours: Spread | None, theirs: float | None) -> tuple[str, str]:
    """(ratio of the seed mean to the published value, verdict) for a lower-is-better figure.

    `match`: the published value lies within the seeds' range, or within 15% of their mean. A single run
    gets no verdict: at the steep start of a curve seeds alone differ by more than 15%.
    """
    if ours is None or theirs is None:
        return "", ""
    ratio = ours.mean / theirs
    if ours.n < 2:
        return f"{ratio:.2f}", "1 run: none"
    if ours.low <= theirs <= ours.high or abs(ratio - 1) <= TOLERANCE:
        return f"{ratio:.2f}", "match"
    return f"{ratio:.2f}", "better" if ratio < 1 else "worse"


def same_algorithm(ours: Spread | None, loop: Spread | None) -> str:
    """Does our run agree with the published loop on the same data? Ranges overlap, or means within 15%."""
    if ours is None or loop is None:
        return ""
    if ours.n < 2 or loop.n < 2:
        return "1 run: none"
    overlap = ours.low <= loop.high and loop.low <= ours.high
    return "yes" if overlap or abs(ours.mean / loop.mean - 1) <= TOLERANCE else "no"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def fmt_spread(spread: Spread | None) -> str:
    if spread is None:
        return "-"
    if spread.n == 1:
        return f"{fmt(spread.mean)} (1)"
    return f"{fmt(spread.mean)} ± {fmt(spread.sd)} [{fmt(spread.low)}, {fmt(spread.high)}] ({spread.n})"


def spread_at(runs: list[Run], epoch: int, figure: str = "values") -> Spread | None:
    return Spread.of([getattr(run, figure)[epoch] for run in runs if epoch in getattr(run, figure)])


def report_epochs(cell: Cell) -> list[int]:
    """The published curve's epochs that some run reached, and the last epoch reached."""
    reached = {epoch for run in cell.runs for epoch in run.values}
    if not reached:
        return []
    return sorted({e for e in CURVE_EPOCHS if e in reached} | {max(reached)})


def mean_seconds(runs: list[Run]) -> float | None:
    per_epoch = [run.seconds_per_epoch for run in runs if run.seconds_per_epoch]
    return statistics.fmean(per_epoch) if per_epoch else None


def report(cells: list[Cell], args: argparse.Namespace, published: dict, wall: float) -> str:
    device = device_description()
    runs = [run for cell in cells for run in cell.runs if not run.error]
    reused = sum(run.reused for run in runs)
    reused = f"; {reused} of {len(runs)} runs reused from earlier invocations" if reused else ""
    loop = any(has_loop(cell) for cell in cells) and args.published_loop
    lines = [
        f"# Reproduction report: {datetime.date.today().isoformat()}, {device}",
        "",
        f"Command: `python benchmarks/reproduce.py {args.command}` "
        + ("(the report alone, from the runs in the work folder)  " if args.report_only else "")
        + (f"({wall / 60:.1f} min in all{reused})  " if not args.report_only else ""),
        f"Software: {software()}  ",
        f"Published numbers: `benchmarks/published.yaml` ({published['source']}).",
        "",
        "How to read it: every value is measured on the test split under the reference protocol (BatchNorm with "
        "batch statistics, batch 64), after each *reference epoch* (the reference's training-set size // 64 "
        "steps). Cells show mean ± standard deviation [min, max] (number of seeds) over seeds "
        f"{', '.join(map(str, args.seed_list))}; a run stopped early counts only at the epochs it reached. "
        "ratio = our mean / published (lower is better for every figure). verdict: `match` when the published "
        f"value lies inside our seeds' range or within {TOLERANCE:.0%} of their mean; one run gets no verdict. "
        + (
            "`loop` is benchmarks/published_loop.py (the reference scripts transcribed, reference data pipeline) "
            "with the same seeds on the same data and machine; `ours = loop`: their ranges overlap or their means "
            f"are within {TOLERANCE:.0%}. "
            if loop
            else ""
        )
        + "`s/epoch` is training time per reference epoch (validation excluded), mean over runs.",
        "",
        "| model | data | figure | ours | loop | published | ratio | verdict | ours = loop "
        "| s/epoch ours | s/epoch loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for cell in cells:
        for run in cell.runs:
            if run.error and run.error != "not run":
                lines.append(f"| {cell.model} | {cell.dataset} | failed | {run.implementation} seed {run.seed}: "
                             f"{run.error} | | | | | | | |")  # fmt: skip
        ours_runs = [r for r in cell.of("ours") if not r.error]
        loop_runs = [r for r in cell.of("loop") if not r.error]
        seconds = fmt(mean_seconds(ours_runs)), fmt(mean_seconds(loop_runs))
        missed = []
        for epoch in report_epochs(cell):
            for figure, metric in (("values", cell.metric), ("elbo", "elbo")):
                ours, theirs = spread_at(ours_runs, epoch, figure), spread_at(loop_runs, epoch, figure)
                published_value = published_at(cell, metric, epoch)
                if ours is None and theirs is None:
                    continue
                if figure == "elbo" and published_value is None and epoch != max(report_epochs(cell)):
                    continue  # the ELBO has no published curve: shown at the last epoch only
                ratio, said = verdict(ours, published_value)
                lines.append(
                    f"| {cell.model} | {cell.dataset} | test/{metric} @ {epoch} | {fmt_spread(ours)} "
                    f"| {fmt_spread(theirs)} | {fmt(published_value)} | {ratio} | {said} "
                    f"| {same_algorithm(ours, theirs)} | {seconds[0]} | {seconds[1]} |"
                )
                if said in ("better", "worse"):
                    loop_said = verdict(theirs, published_value)[1]
                    also = f", published loop: {loop_said}" if loop_said else ""
                    missed.append(f"test/{metric} @ {epoch} x{ratio} ({said}{also})")
        if missed:
            note = DATASETS[cell.dataset].note
            known = f"Known difference from the reference: {note}." if note else "No known difference: investigate."
            misses.append(f"- **{cell.model} / {cell.dataset}**: {'; '.join(missed)}. {known}")
    lines += paired_table(cells)
    lines += ["", "## Misses beyond the seed spread and 15%", ""] + (misses or ["None."])
    if args.notes:
        lines += ["", args.notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def paired_table(cells: list[Cell]) -> list[str]:
    """Ours beside the published loop run with the same seed: both seed the global generator before building the
    model and the sampler, so on identical images a faithful implementation gives the same run up to rounding."""
    rows = []
    for cell in cells:
        loops = {run.seed: run for run in cell.of("loop") if not run.error}
        for ours in cell.of("ours"):
            loop = loops.get(ours.seed)
            if ours.error or loop is None:
                continue
            for epoch in sorted(set(ours.values) & set(loop.values)):
                a, b = ours.values[epoch], loop.values[epoch]
                rows.append(
                    f"| {cell.model} | {cell.dataset} | {ours.seed} | test/{cell.metric} @ {epoch} | {a:.7g} | {b:.7g} "
                    f"| {abs(a - b) / abs(b):.1e} |"
                )
    if not rows:
        return []
    return [
        "",
        "## Same seed: ours and the published loop",
        "",
        "| model | data | seed | figure | ours | loop | relative difference |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [c for c in cells if any(run.values for run in c.runs)]
    if not drawn:
        return
    columns = min(3, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)
    for ax, cell in zip(axes.flat, drawn, strict=False):
        for implementation, style, label in (("ours", "o-", "ours"), ("loop", "^-", "published loop")):
            runs = [r for r in cell.of(implementation) if r.values]
            epochs = sorted({e for r in runs for e in r.values})
            if not epochs:
                continue
            spreads = [spread_at(runs, e) for e in epochs]
            means = [s.mean for s in spreads]
            ax.plot(epochs, means, style, label=f"{label} (mean of up to {max(s.n for s in spreads)} seeds)")
            ax.fill_between(epochs, [s.low for s in spreads], [s.high for s in spreads], alpha=0.25)
        curve = cell.published.get(cell.metric, {}).get("curve", {})
        if curve:
            ax.plot(list(curve), list(curve.values()), "s--", color="k", label="published")
        ax.set(title=f"{cell.model} / {cell.dataset}", xlabel="reference epoch", ylabel=f"test {cell.metric}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
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
