"""The package's import graph: the pure-PyTorch wings know nothing of fairseq or
of the glue above them, and no two files import each other in a circle."""

import ast
import subprocess
import sys

from helpers import REPO

PACKAGE = REPO / "altsg_fairseq"
GROUND = ("modules",)  # pure PyTorch building blocks
PURE = ("modules", "dni")  # no fairseq, nothing from the glue
BELOW_TASKS = ("models", "optim", "criterions")  # fairseq components the task uses, never the other way


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name):
    return (REPO / name.replace(".", "/") / "__init__.py").exists()


def imports(path):
    """The dotted names a file imports (relative imports resolved; ``from pkg
    import mod`` counts as an import of ``pkg.mod`` when that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                is_module = (REPO / (target.replace(".", "/") + ".py")).exists() or is_package(target)
                found.add(target if is_module else base)
    return found


def graph():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports(path) if i in files} for name, path in files.items()}, files


def test_pure_wings_import_no_fairseq_and_nothing_above_them():
    _, files = graph()
    for name, path in files.items():
        wing = name.split(".")[1] if "." in name else ""
        if wing not in PURE:
            continue
        allowed = {f"altsg_fairseq.{w}" for w in (GROUND if wing in GROUND else PURE)}
        for target in imports(path):
            assert not target.startswith("fairseq"), f"{name} imports {target}"
            if target.startswith("altsg_fairseq"):
                assert any(target == a or target.startswith(a + ".") for a in allowed), f"{name} imports {target}"


def test_models_optimizers_and_criterions_import_nothing_from_tasks():
    _, files = graph()
    checked = [name for name in files if name.split(".")[1:2] and name.split(".")[1] in BELOW_TASKS]
    assert {name.split(".")[1] for name in checked} == set(BELOW_TASKS)
    for name in checked:
        for target in imports(files[name]):
            assert not (target == "altsg_fairseq.tasks" or target.startswith("altsg_fairseq.tasks.")), (
                f"{name} imports {target}"
            )


def test_no_circles():
    edges, _ = graph()
    # a package's __init__ importing its own files is no circle: it only hands names on
    edges = {a: {b for b in bs if not (is_package(b) and a.startswith(b + "."))} for a, bs in edges.items()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in edges[node]:
            assert state.get(nxt) != "open", "circle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])


def test_pure_wings_run_without_fairseq():
    code = (
        "import sys; sys.modules['fairseq'] = None\n"
        "import torch\n"
        "from altsg_fairseq.dni import BackwardInterface, Synthesizer\n"
        "from altsg_fairseq.modules import RecurrentStack\n"
        "stack = RecurrentStack('qrnn', 3, 4, 3, 2)\n"
        "out, state = stack(torch.randn(5, 2, 3))\n"
        "dni = BackwardInterface(Synthesizer('qrnn', hidden=4))\n"
        "start, probe = dni.wrap_start(stack.pack(state), tokens=10)\n"
        "assert 'fairseq' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
