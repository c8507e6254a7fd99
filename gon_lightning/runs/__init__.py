"""Run folders, the W&B online/offline decision and checkpoint rules: every decision the CLI acts on.

Every run owns `runs/<model>-<data>-<YYYYmmdd-HHMMSS>[-N]/` holding `config.yaml`, `checkpoints/`, `images/`
and the logger's files, so two runs never share (or clash over) a file (docs/design.md, "Run folders").
`--ckpt_path` resumes the run it came from: same folder, same W&B run. The functions here take and return plain
values (or the config `Namespace` they fill in), so each rule is tested on its own; `gon_lightning.cli` only
calls them. One idea per module: configs, checkpoints, folders, job (ranks and launchers), loggers, messages.
"""

from gon_lightning.runs.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    EVALUATION_OPTIONS,
    LIGHTNING_CKPT_PATHS,
    check_model_checkpoint,
    keep_given_model_options,
    load_checkpoint_file,
    load_model_weights,
    read_torch_file,
    resolve_ckpt_path,
    source_commit,
    surviving_checkpoint,
)
from gon_lightning.runs.configs import (
    IMAGE_MONITOR,
    PACKAGED_CONFIGS,
    Invocation,
    command_line,
    config_filename,
    packaged_config,
    resolve_config_names,
    run_name,
    short_name,
    use_models_monitor,
    with_run_config,
)
from gon_lightning.runs.folders import (
    DEFAULT_RUNS_ROOT,
    RUN_DIR_ENV,
    WANDB_ID_ENV,
    UnfinishedRun,
    discard_unfinished_run,
    fill_run_paths,
    honour_default_root_dir,
    job_run_dir,
    keep_run,
    new_run_dir,
    requeued_checkpoint,
    resolve_run,
)
from gon_lightning.runs.job import is_launched_rank, slurm_detected, slurm_job_id, slurm_job_name, slurm_restart_count
from gon_lightning.runs.loggers import (
    EVALUATION_SUBCOMMANDS,
    configure_loggers,
    new_wandb_id,
    wandb_logged_in,
    wandb_offline,
    wandb_settings,
    with_csv_beside_wandb,
)
from gon_lightning.runs.messages import NO_CHECKPOINTS, fit_summary, stopped_message
from gon_lightning.runs.wandb_shims import skip_pandas_import_for_media, skip_unstaged_launch_inputs

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEY",
    "DEFAULT_RUNS_ROOT",
    "EVALUATION_OPTIONS",
    "EVALUATION_SUBCOMMANDS",
    "IMAGE_MONITOR",
    "LIGHTNING_CKPT_PATHS",
    "NO_CHECKPOINTS",
    "PACKAGED_CONFIGS",
    "RUN_DIR_ENV",
    "WANDB_ID_ENV",
    "Invocation",
    "UnfinishedRun",
    "check_model_checkpoint",
    "command_line",
    "config_filename",
    "configure_loggers",
    "discard_unfinished_run",
    "fill_run_paths",
    "fit_summary",
    "honour_default_root_dir",
    "is_launched_rank",
    "job_run_dir",
    "keep_given_model_options",
    "keep_run",
    "load_checkpoint_file",
    "load_model_weights",
    "new_run_dir",
    "new_wandb_id",
    "packaged_config",
    "read_torch_file",
    "requeued_checkpoint",
    "resolve_ckpt_path",
    "resolve_config_names",
    "resolve_run",
    "run_name",
    "short_name",
    "skip_pandas_import_for_media",
    "skip_unstaged_launch_inputs",
    "slurm_detected",
    "slurm_job_id",
    "slurm_job_name",
    "slurm_restart_count",
    "source_commit",
    "stopped_message",
    "surviving_checkpoint",
    "use_models_monitor",
    "wandb_logged_in",
    "wandb_offline",
    "wandb_settings",
    "with_csv_beside_wandb",
    "with_run_config",
]
