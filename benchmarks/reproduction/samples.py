"""The sample-quality comparison (`--compare`): every model trained for the same steps, tested and evaluated
with each of its samplers (the learned priors among them, each trained post hoc on the model's checkpoint), and its
report."""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reproduction.grid import DATASETS
from reproduction.report import Spread, device_description, device_slug, fmt, software
from reproduction.subprocesses import ROOT, gon_lightning, last_line

# the learned priors over a model's latents (gon_lightning.priors): sampler -> its config (configs/<name>.yaml).
# Each is trained post hoc on the model checkpoint's training latents, as a run of its own (`gon-lightning fit
# --config prior --data.ckpt_path <checkpoint>`), and evaluated through its own checkpoint, which names the
# model's (`gon-lightning evaluate --ckpt_path <prior checkpoint>`)
LEARNED_PRIORS = {"diffusion": "prior", "flow": "prior_flow"}
LEARNED = tuple(LEARNED_PRIORS)
# model -> the samplers evaluated (its default first; `samplers` of the model class lists them all)
COMPARE_MODELS = {
    "gon": ("gaussian", "gmm", *LEARNED),
    "vgon": ("prior", "gaussian", "gmm", *LEARNED),
    "vae": ("prior", "gaussian", "gmm", *LEARNED),
    "ae": ("gaussian", "gmm", *LEARNED),
    "implicit_gon": ("gaussian", "gmm", *LEARNED),
    "gopt": ("optimised",),
}
NO_RECONSTRUCTION = {"gopt"}  # no encoder: no test SSE
QUALITY_FIGURES = ("precision", "recall", "density", "coverage")
# how close the samples lie to the training images against the held-out test images (evaluate's copying figures),
# and a learned prior's latents to the training latents against the test images' latents
COPYING_FIGURES = ("copy_ratio", "copying_z", "latent_copy_ratio")


@dataclass
class Trained:
    """One seed of one model on one dataset, trained for the comparison, and its figures per sampler."""

    model: str
    dataset: str
    seed: int
    path: Path | None = None
    sse: float | None = None
    parameters: int | None = None
    fit_s: float | None = None  # wall seconds of `gon-lightning fit`, process start included
    steps: int | None = None
    quality: dict[str, dict] = field(default_factory=dict)  # sampler -> sample_quality.json
    prior_s: dict[str, float] = field(default_factory=dict)  # learned sampler -> its prior's training seconds
    error: str = ""


def samplers_of(model: str, args: argparse.Namespace) -> tuple[str, ...]:
    """The samplers a model is evaluated with: its own, those --samplers names (all when not given)."""
    chosen = getattr(args, "samplers", None)
    return tuple(s for s in COMPARE_MODELS[model] if not chosen or s in chosen)


def model_flags(args: argparse.Namespace, model: str) -> list[str]:
    return [flag for name, flag in args.model_flags if name == model]


def prior_flags(args: argparse.Namespace, sampler: str) -> list[str]:
    return [flag for name, flag in getattr(args, "prior_flags", []) if name == sampler]


def train_prior(trained: Trained, sampler: str, checkpoint: Path, args: argparse.Namespace, log: Path) -> Path | None:
    """Fit the learned prior `sampler` post hoc on `checkpoint`'s training latents for its config's steps or
    --prior-steps (reused when a finished run with the same steps and flags is there); its training seconds go to
    `trained.prior_s`. Returns the prior's last checkpoint; None (with `trained.error`) when the fit failed, or when
    a report-only pass finds none."""
    assert trained.path is not None
    root = trained.path / "priors" / sampler  # inside the model's run: the comparison's run folder stays the only one
    done = root / "prior.json"
    flags = prior_flags(args, sampler)
    fitted = json.loads(done.read_text()) if done.is_file() else None
    wanted = fitted is not None and fitted.get("steps") == args.prior_steps and fitted.get("flags") == flags
    if fitted is not None and (args.report_only or wanted):
        trained.prior_s[sampler] = fitted["train_s"]
    elif args.report_only:
        return None
    else:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(trained.path / f"quality-{sampler}", ignore_errors=True)  # scored another prior
        fit = [
            *("fit", "--config", str(ROOT / "configs" / f"{LEARNED_PRIORS[sampler]}.yaml")),
            *("--data.ckpt_path", str(checkpoint), "--runs_root", str(root)),
            *("--seed_everything", str(trained.seed)),
            *("--trainer.logger", "pytorch_lightning.loggers.CSVLogger"),
            *(["--trainer.max_steps", str(args.prior_steps)] if args.prior_steps else []),
            # one validation batch each epoch logs the training seconds (time/train_s); no monitored figure, so the
            # checkpoint is written at every epoch's end, the last step's included wherever it falls in an epoch
            *("--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "1"),
            *("--checkpoint.monitor", "null"),
            *("--checkpoint.filename", "step{step:06d}"),
            *flags,
        ]
        began = time.perf_counter()
        if not gon_lightning(fit, log, args, append=True):
            trained.error = f"fit of the {sampler} prior failed: {last_line(log)} (log: {log})"
            return None
        wall = time.perf_counter() - began
        run = next(path for path in root.iterdir() if path.is_dir())
        # training alone (the trainer's time/train_s, at the last full epoch's validation, scaled to the run's
        # steps); the wall time also holds the start and, for a checkpoint's first prior, encoding its training
        # split (LatentDataModule's cache, shared by the priors after it)
        train_s = logged_train_seconds(run) or wall
        trained.prior_s[sampler] = train_s
        done.write_text(json.dumps({"steps": args.prior_steps, "flags": flags, "train_s": train_s, "wall_s": wall}))
    runs = [path for path in root.iterdir() if path.is_dir()]
    return runs[0] / "checkpoints" / "last.ckpt" if runs else None


def logged_train_seconds(run: Path) -> float | None:
    """Seconds of training (without the process's start or validation) of a run, from the last `time/train_s` its
    CSV logger wrote, scaled by the run's last step over the step it was logged at."""
    seconds, at, last = None, None, 0
    for metrics in run.glob("logs/**/metrics.csv"):
        with metrics.open() as rows:
            for row in csv.DictReader(rows):
                step = int(row["step"]) + 1 if row.get("step") else 0
                last = max(last, step)
                if row.get("time/train_s"):
                    seconds, at = float(row["time/train_s"]), step
    return seconds * last / at if seconds is not None and at else seconds


def compare_run(trained: Trained, args: argparse.Namespace, work: Path) -> None:
    """fit for --steps (reused when a finished run is in the work folder), test, then evaluate each sampler."""
    dataset = DATASETS[trained.dataset]
    runs_root = work / f"{trained.model}_{trained.dataset}" / f"seed{trained.seed}"
    log = runs_root.with_suffix(".log")
    done = runs_root / "fit.json"
    fitted = json.loads(done.read_text()) if done.is_file() else None
    if fitted is not None and (args.report_only or fitted.get("steps") == args.steps):
        trained.fit_s, trained.steps = fitted["fit_s"], fitted["steps"]
    elif args.report_only:
        trained.error = "not run"
        return
    else:
        shutil.rmtree(runs_root, ignore_errors=True)
        fit = [
            *("fit", "--config", str(ROOT / "configs" / f"{trained.model}_{dataset.config}.yaml")),
            *(["--data", dataset.data_class] if dataset.data_class else []),
            *("--data.init_args.root", str(args.data_root)),
            *("--runs_root", str(runs_root)),
            *("--seed_everything", str(trained.seed)),
            *("--trainer.logger", "pytorch_lightning.loggers.CSVLogger"),
            *("--trainer.max_epochs", "-1", "--trainer.max_steps", str(args.steps)),
            *("--trainer.limit_val_batches", "0"),  # the test command scores the last checkpoint
            *("--images.every_n_epochs", "0"),
            *model_flags(args, trained.model),
            *args.extra,
        ]
        began = time.perf_counter()
        if not gon_lightning(fit, log, args):
            trained.error = f"fit failed: {last_line(log)} (log: {log})"
            return
        trained.fit_s, trained.steps = time.perf_counter() - began, args.steps
        done.write_text(json.dumps({"steps": args.steps, "fit_s": trained.fit_s}))
    trained.path = next(path for path in runs_root.iterdir() if path.is_dir())
    checkpoint = trained.path / "checkpoints" / "last.ckpt"
    trained.parameters = checkpoint_parameters(checkpoint)
    common = [
        "--config",
        str(trained.path / "config.yaml"),
        "--ckpt_path",
        str(checkpoint),
        "--trainer.logger",
        "false",
    ]
    if trained.model not in NO_RECONSTRUCTION:
        tested = trained.path / "test_metrics.json"
        run_test = not tested.is_file() and not args.report_only
        if run_test and not gon_lightning(["test", *common, *args.extra], log, args, append=True):
            trained.error = f"test failed: {last_line(log)} (log: {log})"
            return
        if tested.is_file():
            trained.sse = json.loads(tested.read_text())["metrics"].get("test/sse")
    for sampler in samplers_of(trained.model, args):
        out = trained.path / f"quality-{sampler}"
        result = out / "sample_quality.json"
        if sampler in LEARNED_PRIORS:  # the prior's checkpoint names the model's: the pair is evaluated
            prior = train_prior(trained, sampler, checkpoint, args, log)
            if prior is None:
                if trained.error:
                    return
                continue
            drawn = ["--ckpt_path", str(prior), "--trainer.logger", "false"]
        else:
            drawn = [*common, "--sampler", sampler]
        evaluate = [
            *("evaluate", *drawn, "--num_samples", str(args.num_samples)),
            *("--out", str(out), *args.extra),
        ]
        run_evaluate = not result.is_file() and not args.report_only
        if run_evaluate and not gon_lightning(evaluate, log, args, append=True):
            trained.error = f"evaluate --sampler {sampler} failed: {last_line(log)} (log: {log})"
            return
        if result.is_file():  # a report-only pass shows what was evaluated
            trained.quality[sampler] = json.loads(result.read_text())


def checkpoint_parameters(checkpoint: Path) -> int:
    """Parameters of the model a checkpoint holds (not its buffers: BatchNorm statistics, a fitted sampler)."""
    import torch

    from gon_lightning import models

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    name = state["hyper_parameters"].get("_class_path", "").rsplit(".", 1)[-1]
    model_class = getattr(models, name, None)
    if model_class is None:  # the run's config names it
        config = yaml.safe_load((checkpoint.parents[1] / "config.yaml").read_text())
        model_class = getattr(models, config["model"]["class_path"].rsplit(".", 1)[-1])
    model = model_class.load_from_checkpoint(checkpoint, map_location="cpu")
    return sum(p.numel() for p in model.parameters())


def quality_figures(result: dict, floor: bool = False) -> dict[str, float]:
    """The figures of a sample_quality.json (or of its floor, the test split against the same reference)."""
    source = result.get("floor", {}) if floor else result
    names = result.get("figures", [])
    if isinstance(names, dict):  # format 1 (the runs of reports/2026-12-01-cpu-samples.md): the figures nested
        return {k: v for k, v in (source["figures"] if floor else names).items() if isinstance(v, (int, float))}
    return {name: source[name] for name in names if isinstance(source.get(name), (int, float))}


def fd_name(runs: list[Trained]) -> str:
    for trained in runs:
        for result in trained.quality.values():
            for name in quality_figures(result):
                if name.startswith("fd_") or name == "fid":
                    return name
    return "fd"


def fmt_compact(values: list[float]) -> str:
    spread = Spread.of([v for v in values if v is not None and math.isfinite(v)])
    if spread is None:
        return "-"
    return (
        f"{fmt(spread.mean)} ({spread.n})" if spread.n == 1 else f"{fmt(spread.mean)} ± {fmt(spread.sd)} ({spread.n})"
    )


def compare_report(runs: list[Trained], args: argparse.Namespace, wall: float) -> str:
    fd = fd_name(runs)
    figures = (fd, *QUALITY_FIGURES, *COPYING_FIGURES)
    flags = "; ".join(f"{model}: `{flag}`" for model, flag in args.model_flags) or "none"
    priors = "; ".join(f"{sampler}: `{flag}`" for sampler, flag in getattr(args, "prior_flags", [])) or "none"
    steps = ", ".join(map(str, sorted({t.steps for t in runs if t.steps}))) or args.steps
    counts = sorted({q.get("num_samples") for t in runs for q in t.quality.values() if q.get("num_samples")})
    samples = ", ".join(map(str, counts)) or args.num_samples
    lines = [
        f"# Sample-quality comparison: {datetime.date.today().isoformat()}, {device_description()}",
        "",
        f"Command: `python benchmarks/reproduce.py {args.command}` "
        + (
            "(the report alone, from the runs in the work folder)  "
            if args.report_only
            else f"({wall / 60:.1f} min in all)  "
        ),
        f"Software: {software()}  ",
        f"Budget: {steps} optimizer steps per run (batch 64, the configs' settings otherwise), seeds "
        f"{', '.join(map(str, args.seed_list))}, {samples} samples per evaluation. Per-model flags: {flags}. "
        "Learned priors: configs/prior.yaml (diffusion) and configs/prior_flow.yaml (flow), "
        + (f"{args.prior_steps} optimizer steps each" if getattr(args, "prior_steps", None) else "their own steps")
        + f"; flags: {priors}.",
        "",
        "How to read it: every model is trained for the same number of steps from its repository config "
        "(`gon-lightning fit`), then `gon-lightning test` gives the test SSE (per image, the papers' figure; the "
        "Generative Optimization Network has no encoder, so none) and `gon-lightning evaluate --sampler S` draws "
        f"the samples and scores them against the training split on the offline classifier's features: `{fd}` is "
        "their Frechet distance (lower is better; not comparable with Inception FIDs), precision and density "
        "measure how real the samples look, recall and coverage how much of the data they cover (k-NN manifolds, "
        "higher is better). `real test images` is the dataset's own test split scored the same way: the floor "
        "a perfect model would reach. The learned priors (`diffusion`: flow matching, `flow`: a zuko normalizing "
        "flow) are trained post hoc on each model checkpoint's training latents (`gon-lightning fit "
        "--config prior[_flow] --data.ckpt_path <checkpoint>`) and evaluated through their own "
        "checkpoint; `prior s` is that training's seconds (the trainer's `time/train_s`: without the process "
        "start or encoding the latents). `copy_ratio` is the median distance of the samples to their nearest "
        "training image over the test images' (on the same features; below 1: closer to the training set than "
        "held-out data, a sign of copying) and `copying_z` Meehan et al.'s data-copying statistic (below -3: "
        "copying); `latent_copy_ratio` the same ratio for a learned prior's latents against the model's training and "
        "test latents (standardised), where a prior that memorises shows first. Cells: mean ± standard deviation "
        "(runs).",
        "",
        "| model | sampler | data | parameters | test SSE | " + " | ".join(figures) + " | fit s | prior s |",
        "|---" * (7 + len(figures)) + "|",
    ]
    datasets = list(dict.fromkeys(trained.dataset for trained in runs))
    for dataset in datasets:
        of_data = [t for t in runs if t.dataset == dataset]
        floors = [quality_figures(r, floor=True) for t in of_data for r in t.quality.values()]
        floors = [f for f in floors if f]
        if floors:
            cells = [fmt(floors[0].get(name)) for name in figures]
            lines.append(f"| real test images | - | {dataset} | - | - | " + " | ".join(cells) + " | - | - |")
        for model in COMPARE_MODELS:
            trained = [t for t in of_data if t.model == model]
            if not trained:
                continue
            for failed in (t for t in trained if t.error):
                lines.append(
                    f"| {model} | failed | {dataset} | seed {failed.seed}: {failed.error} |" + " |" * (len(figures) + 3)
                )
            for sampler in samplers_of(model, args):
                scored = [quality_figures(t.quality[sampler]) for t in trained if sampler in t.quality]
                if not scored:
                    continue
                parameters = {t.parameters for t in trained if t.parameters}
                cells = [fmt_compact([f.get(name) for f in scored]) for name in figures]
                sse = fmt_compact([t.sse for t in trained if t.sse is not None])
                lines.append(
                    f"| {model} | {sampler} | {dataset} | {', '.join(f'{p:,}' for p in sorted(parameters)) or '-'} "
                    f"| {sse if model not in NO_RECONSTRUCTION else '-'} "
                    f"| " + " | ".join(cells) + f" | {fmt_compact([t.fit_s for t in trained if t.fit_s])} "
                    f"| {fmt_compact([t.prior_s[sampler] for t in trained if sampler in t.prior_s])} |"
                )
    if args.notes:
        lines += ["", args.notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def compare(args: argparse.Namespace) -> int:
    unknown = [model for model in args.models if model not in COMPARE_MODELS]
    if unknown:
        raise SystemExit(f"reproduce: --compare has no model {unknown[0]!r}; choose from {', '.join(COMPARE_MODELS)}")
    datasets = []
    for spec in args.datasets:
        dataset = spec.rstrip("?")
        if dataset not in DATASETS:
            raise SystemExit(f"reproduce: unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        if spec.endswith("?") and not (args.data_root / DATASETS[dataset].folder).is_dir():
            continue
        datasets.append(dataset)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = (args.work_dir or ROOT / "runs" / f"compare-{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = [Trained(m, d, seed) for seed in args.seed_list for d in datasets for m in args.models]

    def do(trained: Trained) -> None:
        began = time.perf_counter()
        compare_run(trained, args, work)
        if trained.error == "not run":
            return
        outcome = trained.error or f"sse {fmt(trained.sse)}; " + "; ".join(
            f"{s}: {fmt(quality_figures(q).get(fd_name([trained])))}" for s, q in trained.quality.items()
        )
        print(f"{trained.model}_{trained.dataset} seed {trained.seed}: {outcome} ({time.perf_counter() - began:.0f} s)",
              flush=True)  # fmt: skip

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(do, runs))
    out = args.out or ROOT / "reports" / f"{datetime.date.today().isoformat()}-{device_slug()}-samples.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    shown = [t for t in runs if t.error != "not run"]
    out.write_text(compare_report(shown, args, time.perf_counter() - start))
    print(f"report: {out}  (runs: {work})")
    return 1 if any(t.error and t.error != "not run" for t in runs) else 0
