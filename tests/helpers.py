"""What several test files share: the repository's paths, the fairseq CLIs of this
venv, one way to build a task, model and criterion from fairseq-train flags, and
the original code's two-backward synthetic-gradient update that the single-backward
one is checked against (original_two_backward)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from forked_cli import ENTRIES

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_corpus"
BIN = Path(sys.executable).parent
USER_DIR = REPO / "altsg_fairseq"
# the plugin and its task, as fairseq-eval-lm and fairseq-interactive take them
PLUGIN = ["--user-dir", USER_DIR, "--task", "alternating_lm"]

TRAIN_FLAGS = [
    "--user-dir",
    USER_DIR,
    "--task",
    "alternating_lm",
    "--arch",
    "qrnn_lm",
    "--criterion",
    "synthetic_gradient_lm",
    "--optimizer",
    "adam",
    "--lr",
    "2e-3",
    "--clip-norm",
    "0.25",
    "--cpu",
    "--log-format",
    "json",
    "--log-interval",
    "1",
    "--embed-dim",
    "64",
    "--hidden-dim",
    "64",
    "--seed",
    "3",
    "--no-progress-bar",
]


# every dropout and weight drop off: fairseq seeds every worker alike, so masks drawn per worker
# could not equal one worker's masks over all rows
NO_DROPOUT = ["--dropout", "0", "--dropout-hidden", "0", "--dropout-input", "0", "--dropout-embed", "0"]
NO_DROPOUT += ["--weight-drop", "0"]
# a small model over short windows, for runs that only need a few real updates
TINY = ["--embed-dim", "32", "--hidden-dim", "32", "--bptt", "20"]
# short epochs: train on the sample's valid split, validate on its test split
SHORT_EPOCHS = ["--train-subset", "valid", "--valid-subset", "test"]


def binarize_with(dictionary, destdir, trainpref, validpref=None):
    """fairseq-preprocess of text files with a given dict.txt (the sample's, for its vocabulary);
    returns the CompletedProcess. ``validpref`` may name several files, comma-separated."""
    valid = ["--validpref", validpref] if validpref else []
    return run_cli(
        "fairseq-preprocess", "--only-source", "--srcdict", dictionary, "--trainpref", trainpref, *valid,
        "--destdir", destdir,
    )  # fmt: skip


def run_cli(tool, *args, cwd=None, check=True, env=None, input=None):
    """Run one of fairseq's console scripts from this venv; returns the CompletedProcess.

    It runs as a fork of a process that imported fairseq once (forked_cli.py:
    the same entry function, about 3 s less per call) unless the environment
    asks for a fresh interpreter."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    argv = [str(BIN / tool), *map(str, args)]
    if tool in ENTRIES and _CliServer.get().can_run(full_env):
        proc = _CliServer.get().run(tool, argv, cwd or REPO, full_env, input)
    else:
        proc = subprocess.run(argv, cwd=cwd or REPO, env=full_env, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


class _CliServer:
    """The one forked_cli.py server of this test process, started on first use."""

    _server = None

    @classmethod
    def get(cls):
        if cls._server is None or cls._server.proc.poll() is not None:
            cls._server = cls()
        return cls._server

    def __init__(self):
        import atexit
        import tempfile

        self.env = dict(
            os.environ, PYTHONWARNINGS="ignore"
        )  # what torch and fairseq read when the server imported them
        read_fd, self.answer_fd = os.pipe()
        self.answers = os.fdopen(read_fd, encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forked_cli.py")), str(self.answer_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            pass_fds=[self.answer_fd],
            cwd=REPO,
            env=self.env,
        )
        os.close(self.answer_fd)
        self.files = tempfile.mkdtemp(prefix="forked-cli-")
        atexit.register(self.proc.kill)

    def can_run(self, env):
        """Whether a fork gives a process with ``env``: it differs from the server's only in variables that
        are read after the fork (forked_cli.FORKABLE)."""
        from forked_cli import FORKABLE

        changed = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        return all(k.startswith(FORKABLE) for k in changed)

    def run(self, tool, argv, cwd, env, input):
        paths = {name: os.path.join(self.files, name) for name in ("stdin", "stdout", "stderr")}
        with open(paths["stdin"], "w", encoding="utf-8") as f:
            f.write(input or "")
        request = {"tool": tool, "argv": argv, "cwd": str(cwd), "env": env, **paths}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.answers.readline()
        if not answer:
            raise RuntimeError("the forked fairseq CLI server died; run the test again to see why")
        outputs = {}
        for name in ("stdout", "stderr"):
            with open(paths[name], encoding="utf-8", errors="replace") as f:
                outputs[name] = f.read()
        return subprocess.CompletedProcess(argv, json.loads(answer)["returncode"], outputs["stdout"], outputs["stderr"])


def records(log: str, kind: str) -> list:
    """The JSON records of one fairseq log kind ('train_inner', 'train', 'valid')."""
    return [json.loads(line[line.index("{") :]) for line in log.splitlines() if f"| {kind} |" in line]


def per_update(log) -> dict:
    """{update: (loss, synthesizer loss or None)} of a fairseq-train log's train_inner records, as floats
    (``log``: the output, or the CompletedProcess that holds it)."""
    if not isinstance(log, str):
        log = log.stdout + log.stderr
    return {
        int(r["num_updates"]): (float(r["loss"]), None if r.get("sg_loss") is None else float(r["sg_loss"]))
        for r in records(log, "train_inner")
    }


def eval_lm_scores(output: str) -> tuple:
    """(loss in bits per token, perplexity) as fairseq-eval-lm prints them."""
    found = re.search(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)", output)
    assert found, output[-3000:]
    return float(found.group(1)), float(found.group(2))


def window_sample(tokens, first: bool, stream: str = "train") -> dict:
    """The sample alternating_lm hands the criterion for one window of (B, T + 1) tokens."""
    return {
        "net_input": {"src_tokens": tokens[:, :-1], "src_lengths": None, "stream": stream, "reset": first},
        "target": tokens[:, 1:],
        "ntokens": tokens[:, 1:].numel(),
        "nsentences": tokens.size(0),
    }


def logged(criterion, logging_outputs) -> dict:
    """What the criterion's reduce_metrics logs for ``logging_outputs`` (smoothed values)."""
    from fairseq.logging import metrics

    with metrics.aggregate() as agg:
        criterion.reduce_metrics(logging_outputs)
        return agg.get_smoothed_values()


def write_dictionary(folder: Path, num_types: int) -> None:
    """A dict.txt giving fairseq's Dictionary exactly ``num_types`` entries: its
    4 special symbols (<s>, <pad>, </s>, <unk>) and num_types - 4 words."""
    (Path(folder) / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(num_types - 4)))


class Built(NamedTuple):
    cfg: object
    task: object
    model: object
    criterion: object


def config_from_flags(data, *flags):
    """fairseq-train's parsed config for ``data`` and ``flags``, with the plugin's
    user dir and, unless the flags say otherwise, its task, arch and criterion."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    flags = [str(f) for f in flags]
    defaults = [("--task", "alternating_lm"), ("--arch", "qrnn_lm"), ("--criterion", "synthetic_gradient_lm")]
    extra = [x for flag, value in defaults if flag not in flags for x in (flag, value)]
    args = options.parse_args_and_arch(
        options.get_training_parser(), [str(data), "--user-dir", str(USER_DIR), *extra, *flags]
    )
    return convert_namespace_to_omegaconf(args)


def build_from_flags(data, *flags, num_types=None) -> Built:
    """Task, model and criterion through fairseq's registries, as fairseq-train
    builds them; writes a dict.txt of ``num_types`` entries into ``data`` first
    when it is given."""
    from fairseq import tasks

    if num_types is not None:
        write_dictionary(data, num_types)
    cfg = config_from_flags(data, *flags)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return Built(cfg, task, model, task.build_criterion(cfg.criterion))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(n: int, *args, check=True, timeout=600, threads=1, rank_env=None):
    """fairseq-train as ``n`` gloo workers, one process per rank (the CPU launch the
    README shows), each with ``threads`` CPU threads and, from ``rank_env(rank)``,
    variables of its own; returns each rank's (returncode, stdout + stderr). Past
    ``timeout`` seconds every worker is killed and its returncode is None (a hang
    fails the test: with ``check``, at once)."""
    return finish_workers(*start_workers(n, *args, threads=threads, rank_env=rank_env), check=check, timeout=timeout)


def start_workers(n: int, *args, threads=1, rank_env=None, distributed=True):
    """Start ``run_workers``'s processes and return at once: (processes, their log files).
    With ``distributed=False`` (and n == 1): one plain fairseq-train process."""
    import tempfile

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    envs = [dict(env, **(rank_env(rank) if rank_env else {})) for rank in range(n)]
    logs = [tempfile.NamedTemporaryFile("w+") for _ in range(n)]  # pipes would fill up and stall the workers
    launch = [
        "--distributed-world-size",
        str(n),
        "--distributed-no-spawn",
        "--distributed-init-method",
        f"tcp://127.0.0.1:{port}",
        "--device-id",
        "0",
        "--distributed-backend",
        "gloo",
        "--ddp-backend",
        "legacy_ddp",
    ]
    procs = [
        subprocess.Popen(
            [
                str(BIN / "fairseq-train"),
                *map(str, args),
                *([*launch, "--distributed-rank", str(rank)] if distributed else []),
            ],
            cwd=REPO,
            env=envs[rank],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, log in enumerate(logs)
    ]
    return procs, logs


def wait_for_update(procs, log, update: int, timeout=300) -> None:
    """Wait until ``log`` (a worker's log file) shows a train_inner record of ``update`` or later;
    AssertionError when a process ends first or ``timeout`` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            if any(int(r["num_updates"]) >= update for r in records(f.read(), "train_inner")):
                return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"fairseq-train ended before update {update}")
        time.sleep(0.1)
    raise AssertionError(f"no update {update} within {timeout} s")


def finish_workers(procs, logs, check=True, timeout=600):
    """Wait for ``start_workers``'s processes: each one's (returncode, output), as ``run_workers``."""
    n = len(procs)
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        codes = [None] * n
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = []
    for code, log in zip(codes, logs):
        log.seek(0)
        outs.append((code, log.read()))
        log.close()
    if check and any(code is None for code, _ in outs):
        raise AssertionError(f"fairseq-train workers still ran after {timeout} s:\n" + outs[0][1][-3000:])
    if check and any(code != 0 for code, _ in outs):
        raise AssertionError("fairseq-train workers failed:\n" + "\n----\n".join(out[-4000:] for _, out in outs))
    return outs


def grads(*modules) -> dict:
    """Each parameter's gradient, cloned, named ``<i>.<name>`` (i: the module's place among ``modules``);
    parameters without a gradient are left out."""
    return {
        f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters() if p.grad is not None
    }


def zero_grads(*modules) -> None:
    """Drop every parameter's gradient (``None``, as after ``zero_grad(set_to_none=True)``)."""
    for m in modules:
        for p in m.parameters():
            p.grad = None


def original_two_backward(synthesizer, start, forward, synthetic: bool, textbook: bool = False, scale=0.1):
    """The original code's (alternate_sg) update, the reference the single-backward update is checked
    against (docs/method.md#the-single-backward-update), written out independently of the plugin.

    The synthesizer predicts S(s_0) for the window's start state ``start`` (carried, no gradient into the
    previous window) and is trained by a hook on s_0 that fires on every backward pass through it, each
    firing sending 2 (S(s_0) - g) into the prediction, g being the gradient at s_0 of that pass.
    ``forward(s_0)`` runs the model over the window from s_0 and returns (the per-token mean loss, the
    end state s_T). In a real phase (``synthetic`` false) the loss has one backward pass. In a synthetic
    phase the injection ``scale`` x S(s_T) (without gradient) at s_T is its own backward pass, before the
    loss's, so the hook fires twice; with ``textbook`` (``--sg-target dni``) the injection is part of
    the loss's one backward pass instead, and the hook fires once. Leaves the gradients in the
    parameters of the model and of the synthesizer."""
    import torch

    s0 = start.detach()
    g0 = synthesizer(s0)
    s0w = s0.clone().requires_grad_()
    s0w.register_hook(lambda g: torch.autograd.backward(g0, 2 * (g0 - g), retain_graph=True))
    loss, sT = forward(s0w)
    if not synthetic:
        loss.backward()
        return
    gT = synthesizer(sT.detach()).detach()
    if textbook:
        (loss + (scale * gT * sT).sum()).backward()
    else:
        sT.backward(scale * gT, retain_graph=True)
        loss.backward()
