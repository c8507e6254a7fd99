"""Clusters: every process of a job writes one run (Lightning's launcher, torchrun, srun), and a SLURM job that is
preempted or reaches its time limit is requeued and continues its run exactly (docs/clusters.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import base_args, only_run
from ddp_worker import Recorder
from test_scale import fit_args

from gon_lightning import runs
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.runs import load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_worker.py"
pytestmark = [
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter"),
    pytest.mark.filterwarnings("ignore:.*could not find the monitored key"),  # one step, no validation
]
# what a process started by srun finds (Lightning's SLURMEnvironment reads these), less the rank
SLURM_TASK = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gon", "SLURM_NTASKS": "1", "SLURM_NNODES": "1"}
DDP_VARIABLES = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


def slurm_task(monkeypatch: pytest.MonkeyPatch, procid: int = 0, **extra: str) -> None:
    for name, value in {**SLURM_TASK, "SLURM_PROCID": str(procid), "SLURM_LOCALID": "0", **extra}.items():
        monkeypatch.setenv(name, value)


def test_a_slurm_job_names_its_run_alike_on_every_rank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert runs.slurm_job_name() is None  # not a SLURM job: a timestamped folder per command
    slurm_task(monkeypatch)
    assert runs.slurm_job_name() == "slurm-4242"
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert runs.slurm_job_name() == "slurm-4242.3"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert runs.slurm_job_id() == "4240_2" and runs.slurm_job_name() == "slurm-4240_2.3"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # an interactive allocation is no batch job (as Lightning)
    assert runs.slurm_job_name() is None
    monkeypatch.setenv("SLURM_JOB_NAME", "gon")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_STEP_ID")
    # rank 1 names the folder as rank 0 does, and only rank 0 would remove it
    first = runs.resolve_run(tmp_path / "runs", "gon-mnist", None, None)[0]
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert runs.is_launched_rank()
    again = runs.resolve_run(tmp_path / "runs", "gon-mnist", None, None)[0]
    assert again == first == tmp_path / "runs" / "gon-mnist-slurm-4242"


def test_a_rank_that_cannot_learn_rank_0s_run_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A second node started by hand (NODE_RANK 1, Lightning's launcher): it would open a run of its own."""
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.delenv(runs.RUN_DIR_ENV, raising=False)  # (a monkeypatch undo of an earlier test may restore it)
    with pytest.raises(UserError, match="cannot learn rank 0's run folder: start the nodes of a job with torchrun"):
        runs.resolve_run(tmp_path / "runs", "gon-mnist", None, None)
    assert not (tmp_path / "runs").exists()


def test_a_second_fit_in_one_slurm_job_step_is_refused_not_continued(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    slurm_task(monkeypatch)
    assert runs.requeued_checkpoint(tmp_path, "gon-mnist") is None  # nothing yet
    last = tmp_path / "gon-mnist-slurm-4242" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    with pytest.raises(UserError, match="already holds a run of this SLURM job step"):
        runs.requeued_checkpoint(tmp_path, "gon-mnist")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued: it continues
    assert runs.requeued_checkpoint(tmp_path, "gon-mnist") == str(last)


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `scontrol` on the PATH that records its arguments (the requeue a real one would do)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.equality
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["time-limit", "preempted"])
def test_a_requeued_slurm_job_continues_its_run_exactly(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_scontrol: Path, capsys, signum
):
    """SIGUSR1 (`--signal=SIGUSR1@90`, the time limit near) or SIGTERM (preemption) at the end of epoch 0: a
    checkpoint, and for SIGUSR1 `scontrol requeue` (SLURM requeues a preempted job itself). The requeued job (same
    SLURM_JOB_ID, SLURM_RESTART_COUNT 1) runs the same command and continues, with the same W&B run, to the
    weights of an uninterrupted 2-epoch run."""
    from gon_lightning.models import ImageModel

    straight = tmp_path / "straight"
    main(base_args(mnist_root, straight, "--trainer.max_epochs=2"))

    slurm_task(monkeypatch)
    args = base_args(mnist_root, tmp_path / "runs", "--trainer.max_epochs=2", logger=None)  # W&B (offline), CSV
    epoch_end = ImageModel.on_train_epoch_end

    def signalled_after_epoch_0(self) -> None:
        epoch_end(self)
        if self.current_epoch == 0:
            os.kill(os.getpid(), signum)  # as SLURM signals every task

    with monkeypatch.context() as patched:
        patched.setattr(ImageModel, "on_train_epoch_end", signalled_after_epoch_0)
        with pytest.raises(SystemExit) as raised:
            main(args)
    if signum == signal.SIGUSR1:
        assert raised.value.code == 138
        assert fake_scontrol.read_text().split() == ["requeue", "4242"]
        assert "SLURM job 4242 requeued" in capsys.readouterr().err
    else:
        assert raised.value.code == 143 and not fake_scontrol.exists()
    run = only_run(tmp_path / "runs")
    assert run.name == "gon-mnist-slurm-4242"
    first = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 2  # stopped after epoch 0 (2 batches)

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    cli = main(args)  # the requeued job runs the same command: no --ckpt_path
    assert cli.run_dir == run and only_run(tmp_path / "runs") == run
    assert cli.wandb_id == first["gon_lightning"]["wandb_id"]
    # offline-run-<time>-<id>, with -1 appended when both started in the same second
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(f"-{cli.wandb_id}" in name for name in offline)  # one W&B run, continued
    resumed = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    reference = load_checkpoint_file(only_run(straight) / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 4
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_a_job_requeued_in_its_first_epoch_keeps_last_ckpt_the_latest(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_scontrol: Path
):
    """SIGUSR1 after the first batch, before any epoch ended: the requeued job continues from the middle of that
    epoch's order to the weights of an uninterrupted run, and its checkpoints replace that last.ckpt (Lightning
    would write last-v1.ckpt beside it, and a second requeue would continue from the stale one)."""
    from gon_lightning.callbacks import RunState

    straight = tmp_path / "straight"
    main(base_args(mnist_root, straight, "--trainer.max_epochs=2"))
    slurm_task(monkeypatch)
    args = base_args(mnist_root, tmp_path / "runs", "--trainer.max_epochs=2")

    def signalled_after_step_1(self, trainer, *args) -> None:
        if trainer.global_step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    with monkeypatch.context() as patched:
        patched.setattr(RunState, "on_train_batch_end", signalled_after_step_1, raising=False)
        with pytest.raises(SystemExit):
            main(args)
    checkpoints = only_run(tmp_path / "runs") / "checkpoints"
    assert load_checkpoint_file(checkpoints / "last.ckpt")["global_step"] == 1
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    main(args)
    resumed = load_checkpoint_file(checkpoints / "last.ckpt")
    assert resumed["global_step"] == 4  # 2 epochs of 2 batches
    assert not list(checkpoints.glob("last-v*"))
    reference = load_checkpoint_file(only_run(straight) / "checkpoints" / "last.ckpt")
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without a run of ours or the variables of an earlier in-process DDP run."""
    env = {k: v for k, v in os.environ.items() if k not in (runs.RUN_DIR_ENV, runs.WANDB_ID_ENV, *DDP_VARIABLES)}
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_PORT"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def two_node_args(root: Path, out: Path, batch_size: int, *extra: str) -> list[str]:
    """test_scale's one-step DDP comparison, with the default loggers (W&B offline, CSV) and a checkpoint."""
    args = [a for a in fit_args(root, out, batch_size, *extra) if not a.startswith(("--trainer.logger", "--trainer.d"))]
    return [*args, f"--runs_root={out / 'runs'}", "--images.every_n_epochs=0", "--trainer.precision=64-true"]


def run_nodes(commands: list[list[str]], envs: list[dict[str, str]], cwd: Path) -> None:
    processes = [
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, env in zip(commands, envs, strict=True)
    ]
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]


def assert_one_run_with_single_process_gradients(mnist_root: Path, out: Path, single: Path) -> None:
    (run,) = (out / "runs").iterdir()  # one run folder for both nodes
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run, rank 0's
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["gon_lightning"]["run_dir"] == str(run)
    # the reference in this process, without loggers: a W&B run left open here would be reused by later tests
    cli = main([*two_node_args(mnist_root, single, 256, "--trainer.devices=1"), "--trainer.logger=false"], run=False)
    cli.trainer.callbacks.append(Recorder(single))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    reference = torch.load(single / "rank0.pt")["grads"]
    for rank in (0, 1):
        grads = torch.load(out / f"rank{rank}.pt")["grads"]
        for name, grad in reference.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-14)


@pytest.mark.slow
@pytest.mark.equality
def test_two_torchrun_nodes_write_one_run(mnist_root: Path, tmp_path: Path):
    """Two torchrun "nodes" on 127.0.0.1 (static rendezvous, as the docs start them; gloo, one process each)."""
    out, single = tmp_path / "nodes", tmp_path / "single"
    out.mkdir(), single.mkdir()
    args = two_node_args(mnist_root, out, 128, "--trainer.devices=1", "--trainer.num_nodes=2", "--trainer.strategy=ddp")
    port = str(free_port())
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}",
         "--master-addr=127.0.0.1", f"--master-port={port}", str(WORKER), str(out), "--", *args]
        for node in (0, 1)
    ]  # fmt: skip
    run_nodes(commands, [clean_env(), clean_env()], out)
    assert_one_run_with_single_process_gradients(mnist_root, out, single)


@pytest.mark.slow
@pytest.mark.equality
def test_two_srun_tasks_write_one_run(mnist_root: Path, tmp_path: Path):
    """Two processes with the variables srun sets for a 2-node job of one task per node."""
    out, single = tmp_path / "nodes", tmp_path / "single"
    out.mkdir(), single.mkdir()
    args = two_node_args(mnist_root, out, 128, "--trainer.devices=1", "--trainer.num_nodes=2", "--trainer.strategy=ddp")
    job = {**SLURM_TASK, "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1"}
    job |= {"SLURM_STEP_ID": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    envs = [clean_env(**job, SLURM_PROCID=str(r), SLURM_NODEID=str(r), SLURM_LOCALID="0") for r in (0, 1)]
    run_nodes([[sys.executable, str(WORKER), str(out), "--", *args]] * 2, envs, out)
    assert (out / "runs" / "gon-mnist-slurm-4242.0").is_dir()
    assert_one_run_with_single_process_gradients(mnist_root, out, single)


def test_the_shipped_sbatch_script_requeues_and_its_command_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = (REPO / "scripts" / "slurm.sbatch").read_text()
    for option in ("#SBATCH --signal=SIGUSR1@", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
        assert option in script
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "slurm.sbatch")], timeout=30).returncode == 0
    # the srun line, with the variables SLURM sets for a 1-node, 1-task job
    command = script[script.index("srun gon-lightning fit") :].replace("\\\n", " ").split()[3:]
    slurm_task(monkeypatch, SLURM_JOB_NUM_NODES="1", SLURM_NTASKS_PER_NODE="1", SLURM_STEP_ID="0")
    command = [os.path.expandvars(arg.strip('"')) for arg in command]
    cli = main([*command, "--trainer.accelerator=cpu", f"--runs_root={tmp_path / 'runs'}"], run=False)
    assert (cli.trainer.num_nodes, cli.trainer.num_devices) == (1, 1)
    assert cli.run_dir.name.endswith("-slurm-4242.0")
