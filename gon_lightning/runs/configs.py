"""Config names: `--config NAME` for the packaged configs, the run name `<model>-<data>`, config file names."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace

from gon_lightning.errors import UserError

PACKAGED_CONFIGS = Path(__file__).parent.parent / "configs"  # the repository's configs/, shipped inside the package


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
    """The command line with every `--config NAME` resolved by `packaged_config`."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            resolved[i + 1] = packaged_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + packaged_config(arg.removeprefix("--config="))
    return resolved


#: the commands that, given --ckpt_path and no --config, read the checkpoint's run config: the first two need it,
#: the others use it where there is one (a checkpoint elsewhere takes the model and data options given)
RUN_CONFIG_COMMANDS = ("export", "encode", "evaluate", "predict")
NEEDS_RUN_CONFIG = ("export", "encode")


def with_run_config(args: list[str]) -> list[str]:
    """`gon-lightning export|evaluate|predict|encode --ckpt_path CKPT` without --config: the run's `config.yaml`
    beside CKPT's `checkpoints/` folder gives the model and data options (the checkpoint's hyperparameters then
    replace the model's, as for any --ckpt_path). Other commands, and a command given --config, are left as they are."""
    tokens = list(args)
    command = next((t for t in tokens if t in RUN_CONFIG_COMMANDS), None)
    if command is None or any(t in ("--config", "-c") or t.startswith("--config=") for t in tokens):
        return tokens
    ckpt = next(
        (tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--ckpt_path"),
        next((t.removeprefix("--ckpt_path=") for t in tokens if t.startswith("--ckpt_path=")), None),
    )
    if ckpt is None or any(t == "--help" or t == "-h" for t in tokens):
        return tokens
    run_config = Path(ckpt).parent.parent / "config.yaml"
    if Path(ckpt).parent.name != "checkpoints" or not run_config.is_file():
        if command not in NEEDS_RUN_CONFIG:
            return tokens  # a missing file is named by the checkpoint's own check
        raise UserError(
            f"--ckpt_path {ckpt} lies outside a run folder (no config.yaml beside its checkpoints/ folder): give the "
            "config it was trained with, --config CONFIG"
        )
    at = tokens.index(command) + 1
    return [*tokens[:at], "--config", str(run_config), *tokens[at:]]


def short_name(class_path: str, suffix: str = "") -> str:
    return class_path.rsplit(".", 1)[-1].removesuffix(suffix).lower()


def run_name(config: Namespace) -> str:
    """`<model>-<data>` (e.g. `vgon-cifar10`), the prefix of the config's run folders."""
    return f"{short_name(config.model.class_path)}-{short_name(config.data.class_path, 'DataModule')}"


#: the checkpoint's monitored figure and file name: the image models' (the CLI's defaults), unless the model names its
#: own as a class attribute `checkpoint_monitor` (monitor, filename), as the learned priors do
IMAGE_MONITOR = ("val/sse", "epoch{epoch:04d}-val_sse{val/sse:.4f}")


def use_models_monitor(config: Namespace) -> None:
    """Monitor the model's own figure (its class's `checkpoint_monitor`) where the checkpoint options are the image
    models' defaults: `fit --model FlowMatchingPrior` then keeps its best `val/loss`, where `val/sse` never comes."""
    from gon_lightning.nn.networks import import_object

    checkpoint = config.get("checkpoint")
    if checkpoint is None or (checkpoint.get("monitor"), checkpoint.get("filename")) != IMAGE_MONITOR:
        return
    own = getattr(import_object(config.model.class_path, "--model"), "checkpoint_monitor", None)
    if own is not None:
        checkpoint.monitor, checkpoint.filename = own


def config_filename(subcommand: str | None) -> str:
    """`config.yaml` for the training run; `test-config.yaml` etc. for later commands on the same run."""
    return "config.yaml" if subcommand in (None, "fit") else f"{subcommand}-config.yaml"


class Invocation:
    """The command line of the command this process runs, as the user gave it (for the records that name it)."""

    args: list[str] | None = None


def command_line() -> str:
    """`gon-lightning <args>`, quoted for a shell: the user's command (sys.argv when `main` was given none)."""
    import shlex
    import sys

    args = Invocation.args if Invocation.args is not None else sys.argv[1:]
    return shlex.join(["gon-lightning", *args])
