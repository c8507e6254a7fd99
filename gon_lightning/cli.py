"""The `gon-lightning` command: LightningCLI with models and DataModules chosen by config."""

from __future__ import annotations

import sys
import warnings

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

# importing the packages registers every model and DataModule, so configs may use short class names
from gon_lightning.compile import CompileModules  # noqa: F401 (registers the short name)
from gon_lightning.data import ImageDataModule
from gon_lightning.errors import UserError
from gon_lightning.models import ImageModel


class GONLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # image shape is a property of the data: configs never state it twice
        parser.link_arguments("data.dims", "model.init_args.image_shape", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/sse",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:04d}-val_sse{val/sse:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        if isinstance(logger, dict | object) and getattr(logger, "init_args", None) is not None:
            args = logger.init_args
            if getattr(args, "name", None) in (None, "lightning_logs"):
                model = config.model.class_path.rsplit(".", 1)[-1]
                data = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule")
                args.name = f"{model}-{data}".lower()


def main(args: list[str] | None = None, run: bool = True) -> GONLightningCLI:
    """Entry point of `gon-lightning` and `python -m gon_lightning`; `args` and `run` serve tests."""
    # data is served from memory: worker processes would only add overhead
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    try:
        return GONLightningCLI(
            ImageModel,
            ImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                # GON-family evaluation takes gradients at the origin; inference mode forbids that
                "inference_mode": False,
                "logger": {
                    "class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs"},
                },
            },
            args=args,
            run=run,
        )
    except UserError as error:
        sys.exit(f"gon-lightning: error: {error}")


def console_main() -> None:
    """Console-script entry: a script exits with what its entry returns, so return nothing."""
    main()
