"""Run folders, the W&B online/offline decision and checkpoint rules: every decision the CLI acts on.

Every run owns `runs/<model>-<data>-<YYYYmmdd-HHMMSS>[-N]/` holding `config.yaml`, `checkpoints/`, `images/`
and the logger's files, so two runs never share (or clash over) a file (docs/design.md, "Run folders").
`--ckpt_path` resumes the run it came from: same folder, same W&B run. The functions here take and return plain
values (or the config `Namespace` they fill in), so each rule is tested on its own; `gon_lightning.cli` only
calls them.
"""

from __future__ import annotations

import importlib
import netrc
import os
import secrets
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from jsonargparse import Namespace

from gon_lightning.errors import UserError

CHECKPOINT_KEY = "gon_lightning"  # what gon-lightning adds to every checkpoint it writes
CHECKPOINT_FORMAT = 1
RUN_DIR_ENV = "GON_LIGHTNING_RUN_DIR"  # hands rank 0's run folder to the processes DDP launches
WANDB_ID_ENV = "GON_LIGHTNING_WANDB_ID"
PACKAGED_CONFIGS = Path(__file__).parent / "configs"  # the repository's configs/, shipped inside the package
DEFAULT_RUNS_ROOT = "runs"
# `--ckpt_path` values Lightning resolves itself (no file to check before the run)
LIGHTNING_CKPT_PATHS = frozenset({"best", "hpc", "registry"})
# model options that only change how a trained model is evaluated: given with --ckpt_path, they win over the
# checkpoint's values; any other model option given must agree with the checkpoint (see keep_given_model_options)
EVALUATION_OPTIONS = frozenset({"norm_eval", "eval_latent"})
EVALUATION_SUBCOMMANDS = frozenset({"validate", "test", "predict"})


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


def short_name(class_path: str, suffix: str = "") -> str:
    return class_path.rsplit(".", 1)[-1].removesuffix(suffix).lower()


def run_name(config: Namespace) -> str:
    """`<model>-<data>` (e.g. `vgon-cifar10`), the prefix of the config's run folders."""
    return f"{short_name(config.model.class_path)}-{short_name(config.data.class_path, 'DataModule')}"


def config_filename(subcommand: str | None) -> str:
    """`config.yaml` for the training run; `test-config.yaml` etc. for later commands on the same run."""
    return "config.yaml" if subcommand in (None, "fit") else f"{subcommand}-config.yaml"


def is_launched_rank() -> bool:
    """A process started by a DDP launcher for a rank other than 0 (it must reuse rank 0's run folder)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class UnfinishedRun:
    """The run folder this process made, until the command leaves a result in it (a checkpoint; for validate, test
    and predict, a finished loop): a command that fails before then removes it, so nothing is left behind."""

    path: Path | None = None
    root: Path | None = None  # the runs root, when this process made it too

    @classmethod
    def forget(cls) -> None:
        cls.path = cls.root = None


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/name-<timestamp>` (with -2, -3 ... when taken): mkdir is atomic, so concurrent runs never share.
    The folder counts as unfinished until `keep_run`."""
    root = Path(root)
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        UnfinishedRun.path, UnfinishedRun.root = path, root if made_root else None
        return path
    raise UserError(f"could not create a run folder under {root}")


def new_wandb_id() -> str:
    """A fresh W&B run id, or the one W&B chose: a sweep agent names its run in WANDB_RUN_ID (and W&B ignores any
    other id), so checkpoints must record that one for a resume to continue the same run."""
    return os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host: what `wandb login` leaves behind."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        path = os.environ.get("NETRC") or None
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Whether W&B must run offline: WANDB_MODE says so, or nobody is logged in (never prompt, never hang)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_logged_in()


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; a missing, corrupt, truncated or foreign file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UserError(
            f"checkpoint {path} is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "pytorch-lightning_version" not in checkpoint
    ):
        raise UserError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict / pytorch-lightning_version)")
    return checkpoint


def check_model_checkpoint(path: str | Path, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint of another model class or another architecture, naming the file."""
    info = checkpoint.get(CHECKPOINT_KEY) or {}
    saved = info.get("model")
    here = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved and saved != here:
        raise UserError(f"checkpoint {path} holds a {saved}, but the config builds a {here}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        extra = sorted(found.keys() - expected.keys())
        shapes = [
            f"{k}: {found[k]} != {expected[k]}" for k in expected.keys() & found.keys() if expected[k] != found[k]
        ]
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(extra[:4])}" if extra else "",
                f"shapes {', '.join(shapes[:4])}" if shapes else "",
            )
            if part
        )
        raise UserError(f"checkpoint {path} does not fit this model ({detail}); check the model options in the config")


def honour_default_root_dir(config: Namespace) -> None:
    """`--trainer.default_root_dir DIR` (Lightning's root of all outputs) is where run folders go, as `--runs_root`;
    the trainer's own default_root_dir then becomes the run folder. Both given and different is an error."""
    root = config.trainer.get("default_root_dir")
    if root is None:
        return
    if config.runs_root != DEFAULT_RUNS_ROOT and Path(config.runs_root) != Path(root):
        raise UserError(
            f"--trainer.default_root_dir {root} and --runs_root {config.runs_root} both say where run folders go: "
            "give one of them"
        )
    config.runs_root = str(root)


def resolve_ckpt_path(ckpt_path: str, runs_root: str | Path, name: str) -> str:
    """`last`: the newest `last.ckpt` of runs called `name` under `runs_root` (never a silent fresh start); a file
    path must exist; Lightning's own values (`best`, `hpc`, `registry`) pass unchanged."""
    if ckpt_path == "last":
        pattern = f"{name}-*/checkpoints/last.ckpt"
        found = sorted(Path(runs_root).glob(pattern), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"--ckpt_path last: nothing matches {Path(runs_root) / pattern}")
        return str(found[-1])
    if ckpt_path not in LIGHTNING_CKPT_PATHS and not Path(ckpt_path).is_file():
        raise UserError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    return ckpt_path


def _class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def keep_given_model_options(given: Namespace | None, model: Namespace, ckpt_path: str) -> None:
    """Never silently drop a model option given with --ckpt_path (LightningCLI replaces the model options by the
    checkpoint's, `model`): an evaluation option given wins (written into `model`); any other given option that
    differs is refused. `given` holds only what the user gave (command line, --config), no defaults."""
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
        run_config = Path(ckpt_path).parent.parent / "config.yaml"
        where = f" (--config {run_config} has them all)" if run_config.is_file() else ""
        raise UserError(
            f"--ckpt_path {ckpt_path} does not hold the model given: {'; '.join(conflicts)}. These options "
            "decide what the checkpoint's weights mean (or whether they load) and how its training goes on; only "
            f"{', '.join(sorted(EVALUATION_OPTIONS))} may differ from the checkpoint. Drop them or give the "
            f"checkpoint's values{where}."
        )


def resolve_run(
    runs_root: str | Path, name: str, ckpt_path: str | None, checkpoint: dict[str, Any] | None
) -> tuple[Path, str | None]:
    """The run folder (created) and W&B id of this command, shared with the ranks a DDP launcher starts.

    A loaded checkpoint continues its run: the folder it lies in (wherever that was moved), else the folder it
    records, and its W&B id. A process launched for rank > 0 reuses rank 0's folder; anything else starts a run.
    """
    if checkpoint is not None and ckpt_path is not None:
        path = Path(ckpt_path)
        info = checkpoint.get(CHECKPOINT_KEY) or {}
        if path.parent.name == "checkpoints":
            run_dir = path.parent.parent
        elif info.get("run_dir") and Path(info["run_dir"]).is_dir():
            run_dir = Path(info["run_dir"])
        else:
            run_dir = new_run_dir(runs_root, name)
        wandb_id = info.get("wandb_id") or new_wandb_id()
    elif is_launched_rank() and os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
        wandb_id = os.environ.get(WANDB_ID_ENV) or None
    else:
        run_dir, wandb_id = new_run_dir(runs_root, name), new_wandb_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # processes launched for other ranks inherit it
    os.environ[WANDB_ID_ENV] = wandb_id or ""
    return run_dir, wandb_id


def keep_run() -> None:
    """The command has left a result (a checkpoint, test metrics, predictions): its run folder stays."""
    UnfinishedRun.forget()


def discard_unfinished_run() -> None:
    """Remove the run folder this process made, with its config, logs and offline W&B run, when the command ends
    before leaving a result in it: a failure while the data was prepared, set up or first loaded, a bad option
    found late, a signal before the first checkpoint. The runs root goes too if this process made it and it is
    now empty. A resumed run's folder was never made here, so it is never removed."""
    path, root = UnfinishedRun.path, UnfinishedRun.root
    UnfinishedRun.forget()
    if path is None or not path.is_dir() or is_launched_rank():
        return
    shutil.rmtree(path, ignore_errors=True)
    if root is not None and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def fill_run_paths(config: Namespace, run_dir: Path) -> None:
    """Point every output the user left unset into the run folder; checkpoint loads default to weights only."""
    config.trainer.default_root_dir = str(run_dir)
    for group, key, folder in (
        ("checkpoint", "dirpath", "checkpoints"),
        ("images", "dirpath", "images"),
        ("predictions", "output_dir", "predictions"),
    ):
        if config.get(group) is not None and config[group][key] is None:
            config[group][key] = os.path.join(run_dir, folder)
    if "weights_only" in config and config.weights_only is None:
        config.weights_only = True


def with_csv_beside_wandb(logger: Any) -> Any:
    """A lone W&B logger (the default) gets a CSVLogger beside it, so the metrics are readable without W&B
    (`<run>/logs/version_N/metrics.csv`). A list of loggers is taken as given: `[WandbLogger]` is W&B alone."""
    if isinstance(logger, Namespace) and logger.get("class_path", "").rsplit(".", 1)[-1] == "WandbLogger":
        csv = Namespace(class_path="pytorch_lightning.loggers.CSVLogger", init_args=Namespace(save_dir="."))
        return [logger, csv]
    return logger


def skip_unstaged_launch_inputs() -> None:
    """Spare `wandb.init` the import of W&B Launch when no Launch inputs can be staged.

    wandb 0.31's `init` imports `wandb.sdk.launch` only to apply inputs that Launch code staged in
    `wandb.sdk.launch.inputs.internal`. With torch and Lightning loaded that import takes seconds (pydantic reads
    the source of ~80 models through `inspect`, which walks every loaded module). Nothing can be staged unless
    that module was imported, so then the call is skipped; otherwise it runs as before.
    """
    try:
        from wandb.sdk import wandb_run
    except ImportError:
        return
    detect = getattr(wandb_run.Run, "_detect_and_apply_job_inputs", None)
    if detect is None or getattr(detect, "skips_unstaged", False):
        return

    def detect_if_staged(run: Any) -> None:
        if "wandb.sdk.launch.inputs.internal" in sys.modules:
            detect(run)

    detect_if_staged.skips_unstaged = True  # type: ignore[attr-defined]
    detect_if_staged.__wrapped__ = detect  # type: ignore[attr-defined]
    wandb_run.Run._detect_and_apply_job_inputs = detect_if_staged


def skip_pandas_import_for_media() -> None:
    """Spare the first `wandb.log` of an image the import of pandas.

    wandb 0.31 asks `isinstance(value, pandas.DataFrame)` of every logged value that is not a number or a string
    (our image panels), importing pandas to do so whenever it is installed: 0.15-0.5 s of CPU in a command's first
    image log here. No DataFrame can exist before pandas is imported, so while it is not, the answer is "no"
    without the import; once it is, wandb's own check runs.
    """
    try:
        from wandb import util
    except ImportError:
        return
    check = getattr(util, "is_pandas_data_frame", None)
    if check is None or getattr(check, "skips_unimported", False):
        return

    def is_data_frame_if_imported(value: Any) -> bool:
        return "pandas" in sys.modules and check(value)

    is_data_frame_if_imported.skips_unimported = True  # type: ignore[attr-defined]
    is_data_frame_if_imported.__wrapped__ = check  # type: ignore[attr-defined]
    util.is_pandas_data_frame = is_data_frame_if_imported


def wandb_settings(subcommand: str | None, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """W&B settings of this command beyond W&B's defaults, for `wandb.init(settings=...)`.

    An evaluation command (validate, test, predict) of a checkpoint that records its W&B run continues that run,
    whose `fit` saved the installed packages (`requirements.txt`), the environment that made the weights: listing
    them again (about 0.1 s per command) is skipped. Everything else is recorded as always: metrics, summary,
    config, tables, images and W&B's system metadata. `WANDB__SAVE_REQUIREMENTS` set by the user wins.
    """
    info = (checkpoint or {}).get(CHECKPOINT_KEY) or {}
    continues = subcommand in EVALUATION_SUBCOMMANDS and bool(info.get("wandb_id"))
    if continues and "WANDB__SAVE_REQUIREMENTS" not in os.environ:
        return {"x_save_requirements": False}
    return {}


def configure_loggers(logger: Any, run_dir: Path, wandb_id: str | None, group: str | None = None) -> None:
    """Fill in the logger configs (`trainer.logger`: one, a list, or a bool) for this run.

    W&B: files in the run folder, the folder's name, the run's id (a resume continues the W&B run), the group
    `<model>-<data>` and those two as tags unless given (dashboards filter on them), offline when
    nobody is logged in (printing the sync command); log_model offline is refused. CSV and TensorBoard write
    `<run>/logs/version_N`: a resume, test or predict of the run adds a version, never overwrites one.
    """
    items = logger if isinstance(logger, list) else [logger]
    for item in items:
        if not (isinstance(item, Namespace) and "class_path" in item):
            continue
        args = item.init_args if "init_args" in item else Namespace()
        item.init_args = args
        name = item.class_path.rsplit(".", 1)[-1]
        if name == "WandbLogger":
            if args.get("save_dir") in (None, ".") and not args.get("dir"):
                args.save_dir = str(run_dir)
            if args.get("name") is None:
                args.name = run_dir.name
            args.id = wandb_id
            if group and args.get("group") is None:
                args.group = group
            if group and args.get("tags") is None:
                args.tags = group.split("-", 1)
            if not args.get("offline") and wandb_offline():
                args.offline = True
            if args.get("offline") and args.get("log_model"):
                raise UserError(
                    "trainer.logger.log_model needs an online W&B run, but W&B is offline (WANDB_MODE, or not "
                    f"logged in). Checkpoints stay in {run_dir}/checkpoints; `wandb login`, or drop log_model."
                )
            if args.get("offline"):
                sync = f"wandb sync {run_dir}/wandb/offline-run-*"
                print(f"W&B offline: logging to {run_dir}/wandb (upload later: `{sync}`)", file=sys.stderr)
            os.environ.setdefault("WANDB_RESUME", "allow")  # the same id continues the same W&B run
            skip_unstaged_launch_inputs()
            skip_pandas_import_for_media()
        elif name in ("CSVLogger", "TensorBoardLogger") and args.get("save_dir") in (None, ".", "runs"):
            args.save_dir = str(run_dir)
            args.name = "logs"


def fit_summary(run_dir: Path, trainer: Any, images: str | None = None) -> str:
    """What to look at and run next, printed when `fit` ends: the best checkpoint and its score, the images, and
    the exact commands that test it and that train on from the last checkpoint."""
    checkpoint = trainer.checkpoint_callback
    config = shlex.quote(str(run_dir / "config.yaml"))
    lines = [f"run folder: {run_dir}"]
    last = Path(checkpoint.dirpath) / "last.ckpt" if checkpoint is not None and checkpoint.dirpath else None
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best and checkpoint.best_model_score is not None:
        lines.append(f"best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}  {best}")
    if images and Path(images).is_dir():
        lines.append(f"images: {images}")
    tested = best or (str(last) if last and last.is_file() else "")
    if tested:
        lines.append(f"test it: gon-lightning test --config {config} --ckpt_path {shlex.quote(tested)}")
    if last and last.is_file():
        finished = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch
        more = f" --trainer.max_epochs {2 * trainer.max_epochs}" if finished else ""
        lines.append(f"train on: gon-lightning fit --config {config} --ckpt_path {shlex.quote(str(last))}{more}")
    return "\n".join(lines)


def stopped_message(info: dict[str, Any] | None) -> str | int:
    """What a run stopped by a signal exits with: a message before training began, else (after printing where the
    checkpoint is and the command that resumes from it) 130 for SIGINT, 143 for SIGTERM."""
    if not info:
        return "gon-lightning: stopped by a signal before training began; no checkpoint written"
    run_dir = Path(info["checkpoint"]).parent.parent
    print(
        f"gon-lightning: {info['signal']} received: stopped at step {info['step']}; checkpoint saved to "
        f"{info['checkpoint']}\nresume with: gon-lightning fit --config {run_dir / 'config.yaml'} "
        f"--ckpt_path {info['checkpoint']}",
        file=sys.stderr,
        flush=True,
    )
    return 130 if info["signal"] == "SIGINT" else 143
