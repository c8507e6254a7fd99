"""The inner-step curve of a trained GON-family model (`gon_lightning.inner_curve`): SSE and PSNR on the test split
after 0, 1, 2, 3, 5 and 10 inner steps, at the model's own step size (fixed or learned) or at others given.

    python benchmarks/inner_steps.py --config runs/<run>/config.yaml --ckpt_path runs/<run>/checkpoints/last.ckpt
    python benchmarks/inner_steps.py --config ... --ckpt_path ... --steps 0 1 3 --step_sizes 0.5 1 2 --out curve.json

The images are the test split in the run's batch size, as `gon-lightning test` scores them (the last, smaller
batch included); `--limit_batches` scores the first N batches only. `--out` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import yaml

from gon_lightning.errors import UserError

KEPT = ("seed_everything", "model", "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 3, 5, 10])
    parser.add_argument("--step_sizes", type=float, nargs="+", default=None, help="default: the model's own")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--limit_batches", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args()
    try:
        print(run(args))
    except UserError as error:
        raise SystemExit(f"error: {error}") from None


def run(args: argparse.Namespace) -> str:
    from gon_lightning.cli import main as cli_main
    from gon_lightning.inner_curve import check_curve_options, curve_table, inner_step_curve
    from gon_lightning.runs import load_model_weights

    sizes = args.step_sizes or [None]
    check_curve_options(None, args.steps, sizes)  # before anything is built or read
    warnings.simplefilter("ignore")
    # the model and data of the run's config.yaml (it also records the subcommand's own options, such as ckpt_path)
    config = {key: value for key, value in yaml.safe_load(Path(args.config).read_text()).items() if key in KEPT}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(config, file)
        file.flush()
        cli = cli_main(["--config", file.name, "--trainer.logger", "false"], run=False)
    model, datamodule = cli.model, cli.datamodule
    check_curve_options(model, args.steps, sizes)  # before the checkpoint and the data are read
    load_model_weights(model, args.ckpt_path)
    datamodule.setup("test" if args.split == "test" else "validate")
    loader = datamodule.test_dataloader() if args.split == "test" else datamodule.val_dataloader()
    batches = []
    for index, batch in enumerate(loader):
        if args.limit_batches is not None and index >= args.limit_batches:
            break
        batches.append(datamodule.on_after_batch_transfer(batch.to(model.device), 0))
    trained = model.inner_steps
    rows = inner_step_curve(model, batches, args.steps, sizes)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
        with os.fdopen(handle, "w") as file:
            json.dump({"config": args.config, "ckpt_path": args.ckpt_path, "split": args.split, "rows": rows}, file)
        os.replace(temp, args.out)  # nothing half-written
    return curve_table(rows, trained)


if __name__ == "__main__":
    main()
