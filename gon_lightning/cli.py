"""The `gon-lightning` command: LightningCLI with models and DataModules chosen by config.

Each run gets its own folder (see `gon_lightning.runs`); the default logger is W&B, online when logged in and
offline otherwise; `--ckpt_path` resumes the run it came from (same folder, same W&B run, same data order).
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelSummary, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gon_lightning.callbacks import (
    AtomicCheckpointIO,
    BestAndLastCheckpoint,
    CompactModelSummary,
    EpochLog,
    ImagePanels,
    PredictionWriter,
    RunState,
    TrainingClock,
)

# importing the packages registers every model and DataModule, so configs may use short class names
from gon_lightning.data import ImageDataModule
from gon_lightning.errors import UserError
from gon_lightning.models import ImageModel
from gon_lightning.runs import (
    CHECKPOINT_KEY,
    RUN_DIR_ENV,
    WANDB_ID_ENV,
    check_model_checkpoint,
    is_launched_rank,
    load_checkpoint_file,
    new_run_dir,
    new_wandb_id,
    short_name,
    wandb_offline,
)


def _no_advertising(record: logging.LogRecord) -> bool:
    """Lightning's "💡 Tip: try installing litlogger / litmodels" lines: advertising, with no switch to turn it off."""
    return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_advertising)

PACKAGED_CONFIGS = Path(__file__).parent / "configs"  # the repository's configs/, shipped inside the package
DEFAULT_LOGGER = {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "gon-lightning"}}
# model options that only change how a trained model is evaluated: given with --ckpt_path, they win over the
# checkpoint's values; any other model option given must agree with the checkpoint (see _keep_given_model_options)
EVALUATION_OPTIONS = frozenset({"norm_eval", "eval_latent"})


class RunConfigCallback(SaveConfigCallback):
    """Saves the config as the user gave it (no run-specific paths, no ckpt_path) into the run folder, and the
    resolved config (with the run's folder and W&B id) into every logger's hyperparameters (W&B run config)."""

    def __init__(self, *args: Any, user_config: Namespace, run_dir: str, filename: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_config = user_config
        self.run_dir = run_dir
        self.filename = filename

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            path = os.path.join(self.run_dir, self.filename)
            self.parser.save(self.user_config, path, skip_none=False, overwrite=True, multifile=False)
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": resolved, "run_dir": self.run_dir})
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _logger_configs(logger: Any) -> list[Namespace]:
    items = logger if isinstance(logger, list) else [logger]
    return [item for item in items if isinstance(item, Namespace) and "class_path" in item]


def _class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class GONLightningCLI(LightningCLI):
    run_dir: Path
    wandb_id: str | None = None
    checkpoint: dict[str, Any] | None = None
    given_model: Namespace | None = None  # the model options the user gave (command line, --config), no defaults

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # image shape is a property of the data: configs never state it twice
        parser.link_arguments("data.dims", "model.init_args.image_shape", apply_on="instantiate")
        parser.add_argument("--runs_root", default="runs", help="Folder under which each run gets its own folder.")
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/sse",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:04d}-val_sse{val/sse:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ImagePanels, "images")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    # run folder, logger and checkpoint, decided before anything is built
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._keep_given_model_options(config)
        user_config = copy.deepcopy(config)
        if "ckpt_path" in user_config:
            user_config.ckpt_path = None  # a saved config starts a run; resuming is always explicit
        self._resolve_run(config)
        run_dir = str(self.run_dir)
        config.trainer.default_root_dir = run_dir
        if config.get("checkpoint") is not None and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(run_dir, "checkpoints")
        if config.get("images") is not None and config.images.dirpath is None:
            config.images.dirpath = os.path.join(run_dir, "images")
        if config.get("predictions") is not None and config.predictions.output_dir is None:
            config.predictions.output_dir = os.path.join(run_dir, "predictions")
        if "weights_only" in config and config.weights_only is None:
            config.weights_only = True
        self._configure_loggers(config)
        self.save_config_kwargs = {
            **self.save_config_kwargs,
            "user_config": user_config,
            "run_dir": run_dir,
            "filename": "config.yaml" if self.subcommand in (None, "fit") else f"{self.subcommand}-config.yaml",
        }

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # before LightningCLI reads hyperparameters from --ckpt_path: resolve `last`, refuse what cannot be loaded
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is None or not config.get("ckpt_path"):
            return
        model = short_name(config.model.class_path)
        data = short_name(config.data.class_path, "DataModule")
        if config.ckpt_path == "last":  # the newest last.ckpt of this model and data, never a silent fresh start
            pattern = f"{model}-{data}-*/checkpoints/last.ckpt"
            found = sorted(Path(config.runs_root).glob(pattern), key=lambda p: p.stat().st_mtime)
            if not found:
                raise UserError(f"--ckpt_path last: nothing matches {Path(config.runs_root) / pattern}")
            config.ckpt_path = str(found[-1])
        if config.ckpt_path not in ("best", "hpc", "registry"):
            if not Path(config.ckpt_path).is_file():
                raise UserError(f"--ckpt_path {config.ckpt_path}: no such checkpoint file")
            self.checkpoint = load_checkpoint_file(config.ckpt_path)
            # LightningCLI is about to put the checkpoint's model options over the config: remember what was given.
            # No validation: without defaults a partial config lacks required values (already checked above).
            if isinstance(args, (dict, Namespace)):
                given = parser.parse_object(args, defaults=False, _skip_validation=True)
            else:
                given = parser.parse_args(args, defaults=False, _skip_validation=True)
            self.given_model = given[subcommand].get("model")

    def _keep_given_model_options(self, config: Namespace) -> None:
        """Never silently drop a model option given with --ckpt_path (LightningCLI replaces the model options by the
        checkpoint's): an evaluation option given wins; any other given option that differs is refused."""
        given, model = self.given_model, config.model
        if given is None:
            return
        conflicts = []
        if given.get("class_path") and _class_of(given.class_path) is not _class_of(model.class_path):
            stored, wanted = (path.rsplit(".", 1)[-1] for path in (model.class_path, given.class_path))
            conflicts.append(f"model: checkpoint {stored}, given {wanted}")
        else:
            for key, value in (given.get("init_args") or Namespace()).items():
                stored = model.init_args.get(key)
                if value == stored:
                    continue
                if key in EVALUATION_OPTIONS:
                    model.init_args[key] = value
                else:
                    conflicts.append(f"model.init_args.{key}: checkpoint {stored}, given {value}")
        if conflicts:
            run_config = Path(config.ckpt_path).parent.parent / "config.yaml"
            where = f" (--config {run_config} has them all)" if run_config.is_file() else ""
            raise UserError(
                f"--ckpt_path {config.ckpt_path} does not hold the model given: {'; '.join(conflicts)}. These options "
                "decide what the checkpoint's weights mean (or whether they load) and how its training goes on; only "
                f"{', '.join(sorted(EVALUATION_OPTIONS))} may differ from the checkpoint. Drop them or give the "
                f"checkpoint's values{where}."
            )

    def _resolve_run(self, config: Namespace) -> None:
        model = short_name(config.model.class_path)
        data = short_name(config.data.class_path, "DataModule")
        ckpt_path = config.get("ckpt_path")
        if self.checkpoint is not None:
            path = Path(ckpt_path)
            info = self.checkpoint.get(CHECKPOINT_KEY) or {}
            if path.parent.name == "checkpoints":
                self.run_dir = path.parent.parent  # the run the checkpoint belongs to, wherever it was moved
            elif info.get("run_dir") and Path(info["run_dir"]).is_dir():
                self.run_dir = Path(info["run_dir"])
            else:
                self.run_dir = new_run_dir(config.runs_root, f"{model}-{data}")
            self.wandb_id = info.get("wandb_id") or new_wandb_id()
        elif is_launched_rank() and os.environ.get(RUN_DIR_ENV):
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            self.wandb_id = os.environ.get(WANDB_ID_ENV) or None
        else:
            self.run_dir = new_run_dir(config.runs_root, f"{model}-{data}")
            self.wandb_id = new_wandb_id()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # processes launched for other ranks inherit it
        os.environ[WANDB_ID_ENV] = self.wandb_id or ""

    def _configure_loggers(self, config: Namespace) -> None:
        run_dir = str(self.run_dir)
        for logger in _logger_configs(config.trainer.logger):
            args = logger.init_args if "init_args" in logger else Namespace()
            logger.init_args = args
            name = logger.class_path.rsplit(".", 1)[-1]
            if name == "WandbLogger":
                if args.get("save_dir") in (None, ".") and not args.get("dir"):
                    args.save_dir = run_dir
                if args.get("name") is None:
                    args.name = self.run_dir.name
                args.id = self.wandb_id
                if not args.get("offline") and wandb_offline():
                    args.offline = True
                if args.get("offline") and args.get("log_model"):
                    raise UserError(
                        "trainer.logger.log_model needs an online W&B run, but W&B is offline (WANDB_MODE, or not "
                        f"logged in). Checkpoints stay in {run_dir}/checkpoints; `wandb login`, or drop log_model."
                    )
                if args.get("offline"):
                    print(
                        f"W&B offline: logging to {run_dir}/wandb "
                        f"(upload later: `wandb sync {run_dir}/wandb/offline-run-*`)",
                        file=sys.stderr,
                    )
                os.environ.setdefault("WANDB_RESUME", "allow")  # the same id continues the same W&B run
            elif name in ("CSVLogger", "TensorBoardLogger") and args.get("save_dir") in (None, ".", "runs"):
                # <run>/logs/version_N: a resume, test or predict of the run adds a version, never overwrites one
                args.save_dir = run_dir
                args.name = "logs"

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {})
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        callbacks = trainer_config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        callbacks.append(RunState(self.run_dir, self.wandb_id))
        callbacks.append(TrainingClock())
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            if sys.stdout.isatty():
                callbacks.append(RichProgressBar())
            else:  # logs and pipes: one plain line per epoch, no redrawn bars
                kwargs.setdefault("enable_progress_bar", False)
                callbacks.append(EpochLog())
        if trainer_config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks
        ):
            kwargs["enable_model_summary"] = False  # instead of Lightning's default summary, not beside it
            callbacks.append(CompactModelSummary())
        trainer = super().instantiate_trainer(plugins=plugins, callbacks=callbacks, **kwargs)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._wandb_init.get("anonymous") is None:
                # Lightning passes anonymous=None, which wandb >= 0.19 warns about at every run
                logger._wandb_init.pop("anonymous", None)
        return trainer

    def _check_checkpoint(self) -> None:
        if self.checkpoint is not None:
            check_model_checkpoint(self.config[self.subcommand].ckpt_path, self.checkpoint, self.model)
            self.checkpoint = None  # free the memory before Lightning loads it again

    def before_fit(self) -> None:
        self._check_checkpoint()

    def before_validate(self) -> None:
        self._check_checkpoint()

    def before_test(self) -> None:
        self._check_checkpoint()

    def before_predict(self) -> None:
        self._check_checkpoint()

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            checkpoint = self.trainer.checkpoint_callback
            last = Path(checkpoint.dirpath) / "last.ckpt" if checkpoint and checkpoint.dirpath else None
            print(f"run folder: {self.run_dir}" + (f"  (last checkpoint: {last})" if last and last.exists() else ""))

    def after_test(self) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in sorted(self.trainer.callback_metrics.items()) if k.startswith("test/")}
        path = self.run_dir / "test_metrics.json"
        ckpt = self.config[self.subcommand].get("ckpt_path")
        path.write_text(json.dumps({"checkpoint": ckpt, "metrics": metrics}, indent=2) + "\n")
        shown = "  ".join(f"{k} {v:.5g}" for k, v in metrics.items())
        print(f"test: {shown}  -> {path}")

    def after_predict(self) -> None:
        writer = next((c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is not None and self.trainer.is_global_zero:
            print(f"predictions written to {writer.output_dir}")


def packaged_config(value: str) -> str:
    """`--config NAME` (`vgon_cifar`, `ablations/gon_relu_mnist`) names a config shipped with the package, so the
    published settings work from any directory; a file that exists at that path always wins."""
    if Path(value).is_file():
        return value
    name = value.removeprefix("configs/")  # the repository's paths work outside a checkout too
    path = PACKAGED_CONFIGS / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if path.is_file():
        return str(path)
    if not Path(value).suffix:  # a name, not a path: say which names exist
        names = sorted(str(p.relative_to(PACKAGED_CONFIGS).with_suffix("")) for p in PACKAGED_CONFIGS.rglob("*.yaml"))
        names = [name for name in names if not name.startswith("sweeps")]
        raise UserError(f"--config {value}: no such file, and no packaged config of that name ({', '.join(names)})")
    return value


def resolve_config_names(args: list[str]) -> list[str]:
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            resolved[i + 1] = packaged_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + packaged_config(arg.removeprefix("--config="))
    return resolved


def main(args: list[str] | None = None, run: bool = True) -> GONLightningCLI:
    """Entry point of `gon-lightning` and `python -m gon_lightning`; `args` and `run` serve tests."""
    # the command line itself, with config names resolved, is handed to LightningCLI as `args`
    warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
    # data is served from memory: worker processes would only add overhead
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # a resumed run writes into its own existing checkpoints folder: that is the point, not a hazard
    warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
    try:
        if args is None or isinstance(args, list):
            args = resolve_config_names(sys.argv[1:] if args is None else args)
        cli = GONLightningCLI(
            ImageModel,
            ImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                # GON-family evaluation takes gradients at the origin; inference mode forbids that
                "inference_mode": False,
                "logger": DEFAULT_LOGGER,
            },
            args=args,
            run=run,
        )
        _finish_wandb()
        return cli
    except SIGTERMException as stop:
        info = getattr(stop, "gon_lightning", None)
        if not info:
            sys.exit("gon-lightning: stopped by a signal before training began; no checkpoint written")
        run_dir = Path(info["checkpoint"]).parent.parent
        print(
            f"gon-lightning: {info['signal']} received: stopped at step {info['step']}; checkpoint saved to "
            f"{info['checkpoint']}\nresume with: gon-lightning fit --config {run_dir / 'config.yaml'} "
            f"--ckpt_path {info['checkpoint']}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130 if info["signal"] == "SIGINT" else 143)
    except Exception as error:
        cause = user_error_in(error)
        if cause is None:
            raise
        sys.exit(f"gon-lightning: error: {cause}")


def _finish_wandb() -> None:
    """Close the W&B run the command opened (so a later command in the same process starts cleanly)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any: jsonargparse wraps errors raised while instantiating classes."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error


def console_main() -> None:
    """Console-script entry: a script exits with what its entry returns, so return nothing."""
    main()
