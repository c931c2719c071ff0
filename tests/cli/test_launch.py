"""Launches on machines without GPUs either train as one job or stop every process in one line
before any rendezvous: Slurm's srun (emulated: SLURM_* variables and a stand-in scontrol, as
fairseq reads them), a world size without processes, an init method fairseq would spawn none
for, a GPU device id. And what fairseq infers on GPU nodes under Slurm, for a stated GPU count."""

import os
import time

import pytest
import torch
from omegaconf import OmegaConf

from helpers import (
    NO_DROPOUT,
    TINY,
    TRAIN_FLAGS,
    finish_workers,
    free_port,
    per_update,
    records,
    run_cli,
    run_workers,
    start_workers,
)

FLAGS = [
    *TRAIN_FLAGS,
    "--train-subset",
    "valid",
    *TINY,
    "--batch-size",
    "2",
    "--max-update",
    "5",
    "--disable-validation",
    "--use-sg",
    "--sg-type",
    "qrnn",
    "--whenswitch",
    "1",
    "--sg-noise",
    "0",
    *NO_DROPOUT,
]
ONE_LINE_WITHIN = 60  # seconds


def stand_in_slurm(tmp_path, hostnames_ok=True):
    """A directory with a stand-in ``scontrol`` (``show hostnames`` prints 127.0.0.1) and the
    variables srun sets for each task of a 2-task step on one node."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    answer = "echo 127.0.0.1" if hostnames_ok else "echo 'scontrol: error: no such node' >&2; exit 1"
    scontrol.write_text(f'#!/bin/sh\nif [ "$1 $2" = "show hostnames" ]; then {answer}; fi\n')
    scontrol.chmod(0o755)

    def task_env(rank):
        return {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SLURM_JOB_ID": str(free_port()),  # a port no other test uses: fairseq derives it from the job id
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_NTASKS": "2",
            "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_NNODES": "1",
            "SLURM_STEP_NODELIST": "node1",
            "SLURM_JOB_NODELIST": "node1",
        }

    return task_env


def srun(n, args, task_env):
    """Start n fairseq-train processes as srun's tasks (no distributed flags: Slurm's variables say it)."""
    job = task_env(0)["SLURM_JOB_ID"]
    procs, logs = start_workers(n, *args, distributed=False, rank_env=lambda r: dict(task_env(r), SLURM_JOB_ID=job))
    return finish_workers(procs, logs, check=False, timeout=240)


@pytest.mark.slow
def test_srun_tasks_train_as_one_job(sample_bin, tmp_path):
    hand = per_update(run_workers(2, sample_bin, *FLAGS, "--save-dir", tmp_path / "hand")[0][1])
    outs = srun(2, [sample_bin, *FLAGS, "--save-dir", tmp_path / "srun"], stand_in_slurm(tmp_path))
    assert all(code == 0 for code, _ in outs), outs[0][1][-3000:] + outs[1][1][-3000:]
    assert "srun without GPUs: 2 workers on the CPU" in outs[0][1]
    assert all(r["bsz"] == "4" for r in records(outs[0][1], "train_inner"))  # one job of 2 x 2 rows
    assert per_update(outs[0][1]) == hand


def test_srun_with_another_world_size_stops_every_task_in_one_line(sample_bin, tmp_path):
    start = time.monotonic()
    outs = srun(2, [sample_bin, *FLAGS, "--distributed-world-size", "3"], stand_in_slurm(tmp_path))
    assert time.monotonic() - start < ONE_LINE_WITHIN
    for code, out in outs:
        assert code != 0 and "Traceback" not in out, out[-3000:]
        assert (
            out.strip()
            .splitlines()[-1]
            .startswith("altsg_fairseq: error: --distributed-world-size 3, but srun started 2 tasks")
        )


@pytest.mark.parametrize(
    "case, flags, env, message",
    [
        ("world size alone", ["--distributed-world-size", "2"], {}, "--distributed-world-size 2 on a machine without"),
        (
            "init method without --distributed-no-spawn",
            ["--distributed-world-size", "2", "--distributed-init-method", "tcp://127.0.0.1:29999"],
            {},
            "--distributed-init-method without --distributed-no-spawn on a machine without GPUs",
        ),
        (
            "init method alone",
            ["--distributed-init-method", "tcp://127.0.0.1:29999"],
            {},
            "--distributed-init-method without --distributed-no-spawn on a machine without GPUs",
        ),
        ("a GPU device id", ["--device-id", "1"], {}, "--device-id 1 names a GPU and this machine has none"),
        ("scontrol that fails", [], "failing-scontrol", "Slurm job step of 2 tasks: cannot find its first node"),
    ],
    ids=["world-size-alone", "init-method-without-no-spawn", "init-method-alone", "gpu-device-id", "failing-scontrol"],
)
def test_a_launch_that_cannot_work_is_one_line(sample_bin, tmp_path, case, flags, env, message):
    if env == "failing-scontrol":
        env = stand_in_slurm(tmp_path, hostnames_ok=False)(0)
    start = time.monotonic()
    proc = run_cli("fairseq-train", sample_bin, *FLAGS, *flags, "--save-dir", tmp_path, check=False, env=env)
    assert time.monotonic() - start < ONE_LINE_WITHIN
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error: ") and message in last, last
    assert not (tmp_path / "checkpoint_last.pt").exists()


@pytest.mark.parametrize(
    "layout, env, world_size, expected",
    [
        (
            "2 nodes x 1 task x 4 GPUs (fairseq spawns one process per GPU)",
            {"SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "1", "SLURM_PROCID": "1"},
            4,  # fairseq's default on a node of 4 GPUs
            {"distributed_rank": 4, "distributed_world_size": 8, "distributed_no_spawn": False},
        ),
        (
            "1 node x 4 tasks x 4 GPUs (a task per GPU)",
            {"SLURM_NNODES": "1", "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_NODEID": "0"},
            4,
            {"distributed_rank": 2, "distributed_world_size": 4, "distributed_no_spawn": True, "device_id": 2},
        ),
    ],
    ids=["2x1x4", "1x4x4"],
)
def test_slurm_on_gpu_nodes_infers_fairseqs_rank_world_and_device(monkeypatch, layout, env, world_size, expected):
    """Not run on GPUs (docs/cluster.md says so): the plugin leaves fairseq's own inference alone
    where there are GPUs; this pins what it gives for a stated GPU count."""
    import altsg_fairseq  # noqa: F401  (the plugin's replacement in place)
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.distributed import utils as distributed_utils

    for key in [k for k in os.environ if k.startswith("SLURM_") or k in ("RANK", "WORLD_SIZE")]:
        monkeypatch.delenv(key)
    for key, value in {"SLURM_JOB_ID": "1234", "SLURM_STEP_NODELIST": "gpu[1-2]", **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    devices = []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(
        distributed_utils.subprocess, "check_output", lambda command: b"gpu1\ngpu2\n"
    )  # scontrol show hostnames
    cfg = OmegaConf.structured(FairseqConfig()).distributed_training
    cfg.distributed_world_size, cfg.distributed_port = world_size, 12345
    distributed_utils.infer_init_method(cfg)
    assert cfg.distributed_init_method == "tcp://gpu1:12345"
    for key, value in expected.items():
        assert cfg[key] == value, (layout, key, cfg[key])


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["static", "c10d-under-srun"])
def test_two_torchrun_nodes_train_as_one_job(sample_bin, tmp_path, rendezvous):
    """Two torchrun agents of one process each, as two nodes on 127.0.0.1 (a static rendezvous, or
    c10d's as `srun torchrun` runs it, Slurm's variables beside torchrun's): == the hand launch."""
    import subprocess

    from helpers import BIN, REPO

    hand = per_update(run_workers(2, sample_bin, *FLAGS, "--save-dir", tmp_path / "hand")[0][1])
    port = free_port()
    rendezvous_flags = {
        "static": ["--master-addr", "127.0.0.1", "--master-port", str(port)],
        "c10d-under-srun": ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job"],
    }[rendezvous]
    slurm = stand_in_slurm(tmp_path) if rendezvous == "c10d-under-srun" else (lambda r: {})

    def node(r):
        return ["--nnodes", "2", *(["--node-rank", str(r)] if rendezvous == "static" else []), *rendezvous_flags]

    def env(r):
        return slurm(r)

    logs = [open(tmp_path / f"node{r}.log", "w+") for r in range(2)]
    procs = [
        subprocess.Popen(
            [str(BIN / "torchrun"), *node(r), "--nproc-per-node", "1", str(BIN / "fairseq-train"),
             *map(str, [sample_bin, *FLAGS, "--save-dir", tmp_path / "torchrun"])],
            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **env(r)),
            stdout=logs[r], stderr=subprocess.STDOUT, text=True,
        )
        for r in range(2)
    ]  # fmt: skip
    outs = finish_workers(procs, logs, check=False, timeout=240)
    assert all(code == 0 for code, _ in outs), outs[0][1][-3000:] + outs[1][1][-3000:]
    first = next(out for _, out in outs if records(out, "train_inner"))
    assert all(r["bsz"] == "4" for r in records(first, "train_inner"))  # one job of 2 x 2 rows
    assert per_update(first) == hand


def test_fairseq_hydra_train_with_the_plugin_is_one_line(sample_bin, tmp_path):
    """hydra composes fairseq's configs before fairseq imports a --user-dir: the plugin's configs
    cannot take part, so it stops where it is imported, with a pointer to fairseq-train."""
    from helpers import USER_DIR

    proc = run_cli(
        "fairseq-hydra-train",
        f"common.user_dir={USER_DIR}",
        "++task._name=alternating_lm",
        f"++task.data={sample_bin}",
        "++model._name=qrnn_lm",
        "++criterion._name=synthetic_gradient_lm",
        "common.cpu=true",
        f"checkpoint.save_dir={tmp_path}",
        check=False,
        cwd=tmp_path,  # hydra writes its .hydra/ and log where it runs
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error: fairseq-hydra-train cannot run altsg_fairseq"), last
