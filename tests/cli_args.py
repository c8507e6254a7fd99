"""Command lines of tiny CLI runs shared by the CLI test modules (a GON of nz 8, ngf 4 on the fake MNIST)."""

from __future__ import annotations

from pathlib import Path


def base_args(data_root: Path, runs: Path, *extra: str, subcommand: str = "fit", logger: str | None = "CSVLogger"):
    args = [
        subcommand,
        "--model=GON",
        "--model.init_args.nz=8",
        "--model.init_args.ngf=4",
        "--data=MNISTDataModule",
        f"--data.init_args.root={data_root}",
        "--data.init_args.batch_size=16",
        "--data.init_args.download=false",
        f"--runs_root={runs}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_model_summary=false",
    ]
    if subcommand == "fit":
        args += [
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0",
            "--images.num_images=4",
            "--images.num_samples=4",
            "--images.interpolation_steps=3",
        ]
    else:
        args += [f"--trainer.limit_{subcommand}_batches=1"]
    if logger is not None:
        args.append(f"--trainer.logger={logger}")
    return args + list(extra)


def only_run(runs: Path) -> Path:
    (run,) = runs.iterdir()
    return run
