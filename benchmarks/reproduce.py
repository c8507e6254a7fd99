"""Regenerate the published GON tables: train each model/dataset cell over K seeds, report ours beside theirs.

    python benchmarks/reproduce.py --preset cpu                  # GON, detached GON, Conv AE, 3 seeds each
    python benchmarks/reproduce.py --preset gpu --epochs 10      # every published cell
    python benchmarks/reproduce.py --models gon vae --datasets mnist --data-root ~/datasets --epochs 5 \
        --published-loop --jobs 2 --plot                         # also the published loop, on the same data
    python benchmarks/reproduce.py --preset cpu -- --trainer.precision bf16-mixed   # flags after -- reach every run

Each run of ours is `gon-lightning fit --config configs/<model>_<data>.yaml --seed_everything S` in a subprocess
(the users' code path), with a CSV logger and validation on the test split every *reference epoch* (the
reference's training-set size // 64 optimizer steps, so a stand-in dataset is compared after the same number of
steps), then `gon-lightning test` on the last checkpoint. With `--published-loop`, each MNIST cell is also trained
by `benchmarks/published_loop.py` (the reference scripts transcribed: PIL, Resize(32), ToTensor, DataLoader) with
the same seeds, so a difference the published algorithm shows too on the same data and machine is not taken
for ours. Test values are read at the epochs the published curves use (1, 2, 5, 10, 20, 50, 100) and at the
last epoch reached, and written to reports/<date>-<device>.md as mean, standard deviation and range over the
seeds, beside the published single run (benchmarks/published.yaml). The verdict is taken against that spread,
never one run. `--report-only` writes the report from whatever the work folder holds (an interrupted grid reports
the epochs and seeds it reached, and says so).

`--compare` is the other question, how good each model's *samples* are: every model of `COMPARE_MODELS` is trained
for the same `--steps` on each dataset and seed (`gon-lightning fit`), tested (`gon-lightning test`: test SSE) and
evaluated with each of its samplers (`gon-lightning evaluate`: the offline classifier's Frechet distance, precision,
recall, density, coverage against the training split, with the held-out test split's own figures as the floor);
reports/<date>-<device>-samples.md puts them side by side with the parameter counts:

    python benchmarks/reproduce.py --compare --datasets mnist5k mnist --data-root /tmp/mnist --steps 250 --seeds 2 \
        --model-flags "implicit_gon:--model.init_args.widths=[64,64,64]" --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the reproduction package beside it
from reproduction.grid import DATASETS, MODELS, PRESETS, Cell, Run, has_loop, published_cells, run_loop, run_ours
from reproduction.report import device_slug, plot, report
from reproduction.samples import COMPARE_MODELS, LEARNED_PRIORS, compare
from reproduction.subprocesses import ROOT

PUBLISHED = Path(__file__).with_name("published.yaml")


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
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + K - 1")
    parser.add_argument(
        "--published-loop", action="store_true", help="also train benchmarks/published_loop.py (MNIST cells)"
    )
    parser.add_argument("--loop-only", action="store_true", help="train only the published loop, not ours")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS, default 1)")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: report what the --work-dir holds, finished or not"
    )
    parser.add_argument("--compare", action="store_true", help="the sample-quality comparison instead (see above)")
    parser.add_argument("--steps", type=int, default=250, help="--compare: optimizer steps per run (default 250)")
    parser.add_argument(
        "--num-samples", type=int, default=2000, help="--compare: samples per evaluation (default 2000)"
    )
    parser.add_argument(
        "--model-flags",
        action="append",
        default=[],
        metavar="MODEL:FLAG",
        help="--compare: a flag for one model's fit only, e.g. 'gopt:--model.init_args.input_steps=10' (repeatable)",
    )
    parser.add_argument(
        "--samplers",
        nargs="+",
        choices=sorted({s for samplers in COMPARE_MODELS.values() for s in samplers}),
        help="--compare: evaluate only these of each model's samplers (default: all of them)",
    )
    parser.add_argument(
        "--prior-steps",
        type=int,
        help="--compare: optimizer steps of each learned prior, trained post hoc (default: its config's, "
        "configs/prior.yaml and configs/prior_flow.yaml)",
    )
    parser.add_argument(
        "--prior-flags",
        action="append",
        default=[],
        metavar="SAMPLER:FLAG",
        help="--compare: a flag for one learned prior's fit, e.g. 'diffusion:--model.init_args.hidden=256' "
        "(repeatable)",
    )
    args = parser.parse_args(argv)
    args.model_flags = [tuple(spec.split(":", 1)) for spec in args.model_flags]
    if any(len(spec) != 2 or not spec[1] for spec in args.model_flags):
        parser.error("--model-flags takes MODEL:FLAG, e.g. 'gopt:--model.init_args.ndf=16'")
    args.prior_flags = [tuple(spec.split(":", 1)) for spec in args.prior_flags]
    if any(len(spec) != 2 or spec[0] not in LEARNED_PRIORS or not spec[1] for spec in args.prior_flags):
        parser.error(f"--prior-flags takes SAMPLER:FLAG with SAMPLER one of {', '.join(LEARNED_PRIORS)}")
    if args.compare:
        args.command = " ".join(given)
        args.models = args.models or list(COMPARE_MODELS)
        args.datasets = args.datasets or ["mnist5k", "mnist?"]
        prior_steps = 1 if args.prior_steps is None else args.prior_steps
        if min(args.steps, prior_steps, args.seeds, args.jobs, args.threads) < 1 or args.num_samples < 2:
            parser.error(
                "--steps, --prior-steps, --seeds, --jobs and --threads must be at least 1, --num-samples at least 2"
            )
        if args.report_only and not args.work_dir:
            parser.error("--report-only reads a --work-dir")
        if args.notes and not args.notes.is_file():
            parser.error(f"--notes {args.notes}: no such file")
        args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
        args.extra = extra
        return args
    args.command = " ".join(given)
    preset = PRESETS.get(args.preset, {})
    args.models = args.models or preset.get("models")
    args.datasets = args.datasets or preset.get("datasets")
    args.epochs = args.epochs or preset.get("epochs") or (1 if args.report_only else None)  # reports what was reached
    if not (args.models and args.datasets and args.epochs):
        parser.error("choose --preset, or --models, --datasets and --epochs")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if any("val_fraction" in arg for arg in extra):
        parser.error("curves are read from validation on the test split: data.val_fraction must stay 0")
    if args.notes and not args.notes.is_file():
        parser.error(f"--notes {args.notes}: no such file")
    if args.seeds < 1 or args.jobs < 1 or args.threads < 1 or args.first_seed < 0:
        parser.error("--seeds, --jobs and --threads must be at least 1, --first-seed at least 0")
    if args.report_only and not args.work_dir:
        parser.error("--report-only reads a --work-dir")
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
    args.implementations = ["ours", "loop"] if args.published_loop else ["ours"]
    if args.loop_only:
        args.implementations = ["loop"]
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.compare:
        return compare(args)
    published = yaml.safe_load(args.published.read_text())
    cells = published_cells(published, args.models, args.datasets, args.data_root)
    if not cells:
        raise SystemExit(f"reproduce: nothing published for these models and datasets in {args.published}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = (args.work_dir or ROOT / "runs" / f"reproduce-{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    # seeds outermost, so that an interrupted grid has every cell at the first seeds rather than some at all
    jobs = []
    for seed in args.seed_list:
        for cell in cells:
            for implementation in args.implementations:
                if implementation == "loop" and not has_loop(cell):
                    continue
                run = Run(implementation, seed)
                cell.runs.append(run)
                jobs.append((cell, run))

    def do(job: tuple[Cell, Run]) -> None:
        cell, run = job
        began = time.perf_counter()
        train = not args.report_only
        if run.implementation == "ours":
            run_ours(cell, run, published, args, work, train)
        else:
            run_loop(cell, run, args, work, train)
        if train:
            outcome = run.error or "  ".join(f"{e}: {v:.4g}" for e, v in sorted(run.values.items()))
            print(f"{cell.name} {run.implementation} seed {run.seed}: {outcome} ({time.perf_counter() - began:.0f} s)",
                  flush=True)  # fmt: skip

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(do, jobs))
    out = args.out or ROOT / "reports" / f"{datetime.date.today().isoformat()}-{device_slug()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(cells, args, published, time.perf_counter() - start))
    if args.plot:
        plot(cells, out.with_suffix(".png"))
    print(f"report: {out}  (runs: {work})")
    failed = [run for cell in cells for run in cell.runs if run.error and run.error != "not run"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
