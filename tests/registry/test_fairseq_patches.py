"""The fairseq functions the plugin replaces (altsg_fairseq/fairseq_patches.py) still exist in
fairseq with the parameters their replacements pass on: a fairseq upgrade that renames or
reshapes one fails here, not in the middle of a run."""

import inspect

import pytest

import altsg_fairseq  # noqa: F401  (installs the patches)
from altsg_fairseq import fairseq_patches
from altsg_fairseq.fairseq_patches import PATCHES, RUN_PATCHES


@pytest.mark.parametrize("patch", PATCHES + RUN_PATCHES, ids=[p.name for p in PATCHES + RUN_PATCHES])
def test_fairseqs_function_has_the_parameters_the_replacement_expects(patch):
    # PATCHES are in place from the import on; RUN_PATCHES only while a fairseq-train run runs
    assert patch.installed() == (patch in PATCHES), f"{patch.name}: in place {patch.installed()}"
    assert tuple(inspect.signature(patch.original).parameters) == patch.parameters
    assert patch.original is not patch.replacement
    # the replacement takes the same parameters (or names the first ones and passes the rest on),
    # so that fairseq's callers reach it unchanged
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = inspect.signature(patch.replacement).parameters.values()
    named = tuple(p.name for p in params if p.kind not in variadic)
    forwards = set(variadic) <= {p.kind for p in params}
    full = tuple(p.name for p in params)
    assert full == patch.parameters or (forwards and patch.parameters[: len(named)] == named)
    assert patch.why


def test_run_patches_are_in_place_only_during_a_run():
    from altsg_fairseq.patching import in_place

    with in_place(RUN_PATCHES):
        assert all(p.installed() for p in RUN_PATCHES)
        assert all(p.original is not p.replacement for p in RUN_PATCHES)
    assert not any(p.installed() for p in RUN_PATCHES)


def test_installing_again_changes_nothing():
    before = {p.name: p.original for p in PATCHES}
    fairseq_patches.install()
    assert all(p.installed() and p.original is before[p.name] for p in PATCHES)


def test_every_replacement_is_listed():
    """No module of the package assigns into fairseq outside fairseq_patches."""
    from helpers import REPO

    for path in (REPO / "altsg_fairseq").rglob("*.py"):
        if path.name == "fairseq_patches.py":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not (
                stripped.startswith(("checkpoint_utils.", "distributed_utils.", "PathManager.")) and " = " in stripped
            ), f"{path.name}: {stripped}"
