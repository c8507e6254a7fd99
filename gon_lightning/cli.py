"""The `gon-lightning` command: LightningCLI with models and DataModules chosen by config.

This module only wires: what a run's folder, logger and checkpoint are is decided in `gon_lightning.runs`, the
files a run writes are callbacks (`gon_lightning.callbacks`). The order, per command:

1. `parse_arguments`: resolve `--ckpt_path` (`last`, a file that must exist; a requeued SLURM job's `last.ckpt`)
   and remember the model options the user gave, before LightningCLI replaces them by the checkpoint's.
2. `before_instantiate_classes`: check those options against the checkpoint, make the run folder (one per job),
   point every output and logger into it.
3. `instantiate_trainer`: add the run's plugins and callbacks, and hold the loggers back until the command's loop
   starts; `before_<subcommand>` checks the checkpoint fits.

`main` removes the run folder a command made when the command fails before leaving a result in it.
"""

from __future__ import annotations

import copy
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ModelSummary, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import ClusterEnvironment, SLURMEnvironment
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gon_lightning import runs
from gon_lightning.callbacks import (
    AtomicCheckpointIO,
    BestAndLastCheckpoint,
    CompactModelSummary,
    DivergenceGuard,
    EpochLog,
    HoldBackLoggers,
    ImagePanels,
    PredictionWriter,
    RunConfigCallback,
    RunState,
    SaveTestMetrics,
    TrainingClock,
    WandbRunSummary,
    WorstReconstructions,
)

# importing the packages registers every model, prior, DataModule and callback, so configs may use short class names
from gon_lightning.data import ImageDataModule  # noqa: F401
from gon_lightning.errors import configuration_error, debugging
from gon_lightning.models import ImageModel  # noqa: F401
from gon_lightning.parser import GONArgumentParser
from gon_lightning.priors import LatentPrior, OnlinePrior  # noqa: F401
from gon_lightning.trainer import GONTrainer


def _no_advertising(record: logging.LogRecord) -> bool:
    """Lightning's "💡 Tip: try installing litlogger / litmodels" lines: advertising, with no switch to turn it off."""
    return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_advertising)

DESCRIPTION = (
    "gon-lightning: train, test and share Gradient Origin Networks and their baselines (conv autoencoder, VAE, "
    "variational and implicit GON, Generative Optimization Network) on PyTorch Lightning. A config names a model and "
    "a DataModule (`--config gon_mnist`); `<subcommand> --help` lists every option. Errors in the options are told "
    "in one line; GON_LIGHTNING_DEBUG=1 shows the full traceback."
)

# W&B; runs.with_csv_beside_wandb puts a CSVLogger beside it (a list here would break `--trainer.logger CSVLogger`)
DEFAULT_LOGGER = {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "gon-lightning"}}


class GONLightningCLI(LightningCLI):
    run_dir: Path
    wandb_id: str | None = None
    wandb_settings: dict[str, Any] | None = None  # what runs.wandb_settings adds to wandb.init
    logger_note: str | None = None  # where an offline W&B run logs, said when it starts
    checkpoint: dict[str, Any] | None = None  # the --ckpt_path file, loaded once to check it
    given_model: Namespace | None = None  # the model options the user gave (command line, --config), no defaults

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        command_line = kwargs.get("args")
        self.invoked = invoked_subcommand(sys.argv[1:] if command_line is None else command_line)  # None: argv
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Only the subcommand the command line names (all of them when it names none: `--help`, a typo). LightningCLI
        builds a parser per subcommand, each introspecting the Trainer, every model and DataModule, the loggers and
        callbacks; a command runs one of them."""
        every = {**LightningCLI.subcommands(), **GONTrainer.SUBCOMMANDS}
        return {self.invoked: every[self.invoked]} if self.invoked in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # image shape is a property of the data: configs never state it twice
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
        # a prior's latent size is the data's (LatentDataModule's nz); image DataModules have none: the link is skipped
        parser.link_arguments("data.nz", "model.init_args.latent_size", apply_on="instantiate")
        parser.add_argument(
            "--runs_root",
            default=runs.DEFAULT_RUNS_ROOT,
            help="Folder under which each run gets its own folder (--trainer.default_root_dir says the same).",
        )
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": runs.IMAGE_MONITOR[0],  # a model may name its own (use_models_monitor)
                "checkpoint.mode": "min",
                "checkpoint.save_last": "link",  # last.ckpt: a link to this epoch's checkpoint, else written once
                "trainer.log_every_n_steps": 10,  # per-step curves: 8 points per epoch of the 5,000-image demo
                "checkpoint.filename": runs.IMAGE_MONITOR[1],
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(DivergenceGuard, "divergence")  # before the panels, which it spares
        parser.add_lightning_class_args(ImagePanels, "images")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        runs.honour_default_root_dir(config)
        if subcommand == "fit" and not config.get("ckpt_path"):
            config.ckpt_path = runs.requeued_checkpoint(config.runs_root, runs.run_name(config))
            if config.ckpt_path and not runs.is_launched_rank():
                print(f"SLURM job requeued: continuing from {config.ckpt_path}", file=sys.stderr, flush=True)
        if not subcommand or not config.get("ckpt_path"):
            return
        config.ckpt_path = runs.resolve_ckpt_path(config.ckpt_path, config.runs_root, runs.run_name(config))
        if config.ckpt_path not in runs.LIGHTNING_CKPT_PATHS:
            self.checkpoint = runs.load_checkpoint_file(config.ckpt_path)
            # parsed without defaults, a partial config lacks required values: skip validation (done above)
            parse = parser.parse_object if isinstance(args, (dict, Namespace)) else parser.parse_args
            self.given_model = parse(args, defaults=False, _skip_validation=True)[subcommand].get("model")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        runs.keep_given_model_options(self.given_model, config.model, config.get("ckpt_path"))
        runs.use_models_monitor(config)
        user_config = copy.deepcopy(config)
        if "ckpt_path" in user_config:
            user_config.ckpt_path = None  # a saved config starts a run; resuming is always explicit
        self.run_dir, self.wandb_id = runs.resolve_run(
            config.runs_root, runs.run_name(config), config.get("ckpt_path"), self.checkpoint
        )
        self.wandb_settings = runs.wandb_settings(self.subcommand, self.checkpoint)
        runs.fill_run_paths(config, self.run_dir)
        config.trainer.logger = runs.with_csv_beside_wandb(config.trainer.logger)
        self.logger_note = runs.configure_loggers(
            config.trainer.logger, self.run_dir, self.wandb_id, runs.run_name(config)
        )
        self.save_config_kwargs = {
            **self.save_config_kwargs,
            "user_config": user_config,
            "run_dir": str(self.run_dir),
            "filename": runs.config_filename(self.subcommand),
        }

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = _as_list(config.trainer.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        if runs.slurm_detected() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            # RunState requeues on SIGUSR1 after a checkpoint at a batch boundary (exact to resume), instead of
            # Lightning's hpc checkpoint written wherever the signal finds the step
            plugins.append(SLURMEnvironment(auto_requeue=False))
        # no W&B run before the data is ready; first, so the others find the loggers in place at the start
        held = HoldBackLoggers(note=self.logger_note)
        callbacks = [held, *_as_list(config.trainer.get("callbacks"))]
        callbacks += [RunState(self.run_dir, self.wandb_id), TrainingClock(), SaveTestMetrics()]
        callbacks += [WandbRunSummary(), WorstReconstructions()]
        if config.trainer.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            if sys.stdout.isatty():
                callbacks.append(RichProgressBar())
            else:  # logs and pipes: one plain line per epoch, no redrawn bars
                kwargs.setdefault("enable_progress_bar", False)
                callbacks.append(EpochLog())
        if config.trainer.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks
        ):
            kwargs["enable_model_summary"] = False  # instead of Lightning's default summary, not beside it
            callbacks.append(CompactModelSummary())
        trainer = super().instantiate_trainer(plugins=plugins, callbacks=callbacks, **kwargs)
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            if logger._wandb_init.get("anonymous") is None:
                # Lightning passes anonymous=None, which wandb >= 0.19 warns about at every run
                logger._wandb_init.pop("anonymous", None)
            if self.wandb_settings and logger._wandb_init.get("settings") is None:  # settings the user gave win
                logger._wandb_init["settings"] = dict(self.wandb_settings)
        held.hold(trainer)
        return trainer

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        if config.get("enable_checkpointing") is False:  # the CLI's own checkpoint callback goes too
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            if not runs.is_launched_rank():
                print(runs.NO_CHECKPOINTS, file=sys.stderr, flush=True)
        return super()._instantiate_trainer(config, callbacks)

    def _check_checkpoint(self) -> None:
        if self.checkpoint is not None:
            runs.check_model_checkpoint(self.config[self.subcommand].ckpt_path, self.checkpoint, self.model)
            self.checkpoint = None  # free the memory before Lightning loads it again

    before_fit = before_validate = before_test = before_predict = _check_checkpoint

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            images = next((c.dirpath for c in self.trainer.callbacks if isinstance(c, ImagePanels)), None)
            print(runs.fit_summary(self.run_dir, self.trainer, images), flush=True)

    def after_predict(self) -> None:
        writer = next((c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is not None and self.trainer.is_global_zero:
            print(f"predictions written to {writer.output_dir}")


def invoked_subcommand(args: Any) -> str | None:
    """The subcommand a command line (or a config object with a `subcommand` key) names, or None: the first
    positional argument, skipping the value of the top-level `-c/--config`."""
    if isinstance(args, (dict, Namespace)):
        return args.get("subcommand")
    tokens = iter(args or ())
    for token in tokens:
        if token in ("-c", "--config"):
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [] if value is None else [value]


def main(args: list[str] | None = None, run: bool = True) -> GONLightningCLI:
    """Entry point of `gon-lightning` and `python -m gon_lightning`; `args` and `run` serve tests."""
    # the command line itself, with config names resolved, is handed to LightningCLI as `args`
    warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
    # data is served from memory: worker processes would only add overhead
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # a resumed run writes into its own existing checkpoints folder: that is the point, not a hazard
    warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
    runs.UnfinishedRun.forget()
    try:
        try:
            return _run(args, run)
        except BaseException:
            _finish_wandb(exit_code=1)  # (a later command in this process must not reuse it)
            # whatever ended the command before it left a result: no run folder, no offline W&B run stays behind
            runs.discard_unfinished_run()
            raise
    except SIGTERMException as stop:
        sys.exit(runs.stopped_message(getattr(stop, "gon_lightning", None)))
    except Exception as error:
        line = None if debugging() else configuration_error(error)
        if line is None:  # a bug, or GON_LIGHTNING_DEBUG=1: the whole traceback
            raise
        sys.exit(f"gon-lightning: error: {line}")


def _run(args: Any, run: bool) -> GONLightningCLI:
    if args is None or isinstance(args, list):
        runs.Invocation.args = list(sys.argv[1:] if args is None else args)
        args = runs.with_run_config(runs.resolve_config_names(sys.argv[1:] if args is None else args))
    cli = GONLightningCLI(
        LightningModule,  # the image models (models/) and the learned priors over their latents (priors/)
        LightningDataModule,
        trainer_class=GONTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=GONArgumentParser,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION, "prog": "gon-lightning"},
        trainer_defaults={
            # GON-family evaluation takes gradients at the origin; inference mode forbids that
            "inference_mode": False,
            "logger": DEFAULT_LOGGER,
        },
        args=args,
        run=run,
    )
    if run:
        runs.keep_run()  # the command finished: what it left is its result
    _finish_wandb()
    return cli


def _finish_wandb(exit_code: int | None = None) -> None:
    """Close the W&B run the command opened (so a later command in the same process starts cleanly)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def console_main() -> None:
    """Console-script entry: a script exits with what its entry returns, so return nothing."""
    main()
