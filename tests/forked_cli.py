"""fairseq's console scripts, each run in a fresh fork of one process that imported fairseq once.

Every fairseq CLI spends about 3 s importing torch and fairseq (sklearn,
hydra, every task and model) before it reads a flag, and the suite starts
some seventy of them, most to see one error line. This server imports
fairseq's CLI modules once and runs no torch operation, so no thread pool
exists when it forks. Each request forks it; the child then is the console
script from its first line on: the same entry function (the one in the
venv's ``bin/fairseq-*``), the flags in ``sys.argv``, its own working
directory, environment, stdin, stdout and stderr, and the exit status the
interpreter would give (``SystemExit``'s code; 1 and a traceback for an
uncaught exception; atexit handlers run). The plugin is imported by the
child through ``--user-dir``, never by the server.

What a fork cannot give is a variable read while torch or fairseq were
imported (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``PYTHON*``, ...):
``helpers.run_cli`` starts a real process whenever the environment differs
from the server's in anything but ``FORKABLE`` variables.

Protocol: one JSON request per line on stdin, {"tool", "argv", "cwd", "env",
"stdin", "stdout", "stderr"} (the last three file paths); one JSON answer per
line, {"returncode"}, on the file descriptor given as the first argument.
"""

import json
import os
import sys

ENTRIES = {
    "fairseq-train": "fairseq_cli.train",
    "fairseq-eval-lm": "fairseq_cli.eval_lm",
    "fairseq-interactive": "fairseq_cli.interactive",
    "fairseq-preprocess": "fairseq_cli.preprocess",
}
# variables read only after the plugin is imported, or never by torch/fairseq at import time
# (pytest sets PYTEST_CURRENT_TEST anew for every test: without it here, every test but the
# server's first would start a fresh interpreter)
FORKABLE = ("ALTSG_", "WANDB_", "PYTEST_CURRENT_TEST")


def run_child(request, answer_fd, modules):
    """In the forked child: become ``request['tool']`` and never return."""
    import atexit
    import traceback

    os.close(answer_fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in [
        (0, request["stdin"], os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ]:
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # not the server's buffered request pipe
    sys.argv = list(request["argv"])
    try:
        result = modules[request["tool"]].cli_main()
        code = 0 if result is None else result
    except SystemExit as stop:  # what the interpreter does with it at the top level
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        import threading

        threading._shutdown()  # the interpreter's exit: join the threads that are not daemons
        atexit._run_exitfuncs()  # tensorboard writers and the like close at exit
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def serve(answer_fd):
    import importlib

    modules = {tool: importlib.import_module(name) for tool, name in ENTRIES.items()}
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request, answer_fd, modules)
        _, status = os.waitpid(pid, 0)
        os.write(answer_fd, (json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n").encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
