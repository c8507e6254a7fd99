"""Who this process is in its job: the rank and the launcher (Lightning's, torchrun, SLURM)."""

from __future__ import annotations

import os


def is_launched_rank() -> bool:
    """A process started by a DDP launcher for a rank other than 0 (it must reuse rank 0's run folder)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))
