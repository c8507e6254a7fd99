"""Who this process is in its job, and how the processes of one job agree on one run.

A job's processes are started by Lightning's own launcher (it re-runs the command for the other local ranks), by
torchrun (one agent per node starts its ranks) or by SLURM's srun (one task per rank); several nodes run the same
command. They must all write into one run folder and one W&B run, chosen once (docs/clusters.md):

- under SLURM the name comes from the job's identity (`SLURM_JOB_ID`, the array task, the step), which every
  rank, and the same job requeued after a preemption, computes alike;
- under torchrun rank 0 chooses and hands its choice to the others through the store torchrun's agent hosts for
  the job (the one `init_process_group` uses later), before the trainer exists;
- under Lightning's launcher rank 0 chooses and the ranks it launches inherit the choice in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

# how long the other ranks wait for rank 0's choice (rank 0 may still be importing or checking options)
CHOICE_TIMEOUT = timedelta(minutes=30)


def slurm_detected() -> bool:
    """A process srun (or sbatch) started as a task of a batch job, as Lightning's SLURMEnvironment detects it: an
    interactive allocation (job name `bash` or `interactive`) is not, so it gets a run folder per command."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: `<job>`, or `<array job>_<task>` for a task of a job array."""
    if not slurm_detected() or not os.environ.get("SLURM_JOB_ID"):
        return None
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}" if array_job else os.environ["SLURM_JOB_ID"]


def slurm_job_name() -> str | None:
    """`slurm-<job>[.<step>]`: the same for every rank of a job step, and for that step of the same job after a
    requeue (steps are numbered again from 0 when the requeued batch script runs)."""
    job = slurm_job_id()
    if job is None:
        return None
    step = os.environ.get("SLURM_STEP_ID") or os.environ.get("SLURM_STEPID")
    return f"slurm-{job}" + (f".{step}" if step else "")


def slurm_restart_count() -> int:
    """How many times SLURM requeued this job (preemption, `scontrol requeue`): 0 on its first start."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def torchrun_agent_store() -> bool:
    """torchrun started this process for a job of more than one rank, and its agent hosts the job's store at
    MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE, set by every torchrun rendezvous of torch 2)."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(os.environ.get("WORLD_SIZE", "1")) > 1
        and bool(os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"))
    )


def is_launched_rank() -> bool:
    """A process of a job other than its global rank 0 (it must join rank 0's run, never make one)."""
    names = ["LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK"]
    if slurm_detected():
        names.append("SLURM_PROCID")
    return any(os.environ.get(name, "0") not in ("", "0") for name in names)


def chosen_by_rank_zero(key: str, choose: Callable[[], str]) -> str:
    """Under torchrun: `choose()` on global rank 0, the same value on every other rank, through the agent's store.
    The key holds torchrun's restart count, so a restarted job chooses again."""
    from torch.distributed import PrefixStore, TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=CHOICE_TIMEOUT)
    store = PrefixStore(f"gon_lightning/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    if not is_launched_rank():
        value = choose()
        store.set(key, value)
        return value
    return store.get(key).decode()
