"""Two start-up costs of wandb 0.31 spared without changing what it records (docs/design.md, private APIs)."""

from __future__ import annotations

import sys
from typing import Any


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
