"""The CUDA install resolves: each extra's pins, with the package's own requirements,
admit at least one version of every package (checked offline with ``packaging``,
no index), and the install hint names the extra for PyTorch's CUDA major."""

import os
import re
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from altsg_fairseq.modules import forget_mult_cuda

REPO = Path(__file__).resolve().parents[2]
# what CuPy's own wheels require of others (CuPy 14 needs numpy >= 2; CuPy 13 has no such
# floor): not in this package's metadata, so stated here
UPSTREAM = {"cupy-cuda13x": [(">=14", "numpy>=2")], "cupy-cuda12x": [(">=14", "numpy>=2")]}


@pytest.fixture(scope="module")
def package():
    """The keyword arguments setup.py gives setuptools.setup (setup.py run with setup() captured)."""
    captured = {}
    saved = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        code = compile((REPO / "setup.py").read_text(), "setup.py", "exec")
        cwd = os.getcwd()
        os.chdir(REPO)  # setup.py reads README.md
        try:
            exec(code, {"__name__": "__main__", "__file__": str(REPO / "setup.py")})
        finally:
            os.chdir(cwd)
    finally:
        setuptools.setup = saved
    return captured


def candidates(specifier_versions):
    """Versions to try against a set of specifiers: each version they name, just above it
    and just below it (e.g. 2 -> 2, 2.0.0.1, 1.999)."""
    out = set()
    for text in specifier_versions:
        v = Version(text)
        release = list(v.release)
        out |= {v, Version(".".join(map(str, release + [0, 0, 1])))}
        below = release[:]
        for i in range(len(below) - 1, -1, -1):
            if below[i] > 0:
                below[i] -= 1
                out.add(Version(".".join(map(str, below[: i + 1] + [999]))))
                break
    return out


def witnesses(requirements):
    """For each package the requirements name: the candidate versions all of them admit."""
    by_name = {}
    for text in requirements:
        req = Requirement(text)
        by_name.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    found = {}
    for name, specs in by_name.items():
        tried = candidates(s.version for spec in specs for s in spec) or {Version("1")}
        found[name] = sorted(v for v in tried if all(spec.contains(v, prereleases=True) for spec in specs))
    return found


def with_upstream(requirements):
    """``requirements`` plus what the upstream wheels they allow require of others."""
    out = list(requirements)
    for text in requirements:
        req = Requirement(text)
        for versions, needs in UPSTREAM.get(canonicalize_name(req.name), []):
            if any(
                Requirement(f"x{versions}").specifier.contains(v)
                for v in witnesses([text])[canonicalize_name(req.name)]
            ):
                out.append(needs)
    return out


def requirements_txt():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_every_extra_is_satisfiable_with_the_package_requirements(package):
    base = package["install_requires"]
    for extra, pins in package["extras_require"].items():
        found = witnesses(with_upstream(base + pins))
        empty = [name for name, versions in found.items() if not versions]
        assert not empty, f"[{extra}]: no version of {empty} satisfies {base + pins}"


def test_the_checker_finds_the_old_contradiction():
    """numpy<2 beside a CuPy 14 (which needs numpy >= 2) cannot resolve; CuPy 13 could."""
    assert witnesses(with_upstream(["numpy<2", "cupy-cuda13x>=14,<15"]))["numpy"] == []
    assert witnesses(with_upstream(["numpy<2", "cupy-cuda12x>=13,<14"]))["numpy"] != []
    assert witnesses(["torch>=2.6", "torch==2.13.0"])["torch"] == [Version("2.13.0")]


def test_the_cpu_environment_resolves(package):
    """requirements.txt (the suite's CPU environment) with the package's requirements and its test extra."""
    found = witnesses(requirements_txt() + package["install_requires"] + package["extras_require"]["test"])
    assert all(found.values()), {k: v for k, v in found.items() if not v}


def test_one_extra_per_cuda_major_with_its_cupy_wheel(package):
    extras = package["extras_require"]
    for major, (extra, wheel) in forget_mult_cuda.CUPY_FOR_CUDA.items():
        names = [Requirement(r).name for r in extras[extra]]
        assert f"cupy-cuda{major}x" in names and f"cupy-cuda{major}x" in wheel, extra
        assert extra == f"cuda{major}"


@pytest.mark.parametrize("version,extra", [("12.8", "cuda12"), ("12.1", "cuda12"), ("13.0", "cuda13")])
def test_the_hint_names_the_extra_of_torchs_cuda_major(version, extra, package):
    hint = forget_mult_cuda.install_hint(version)
    assert re.findall(r"altsg-fairseq\[(\w+)\]", hint) == [extra] and extra in package["extras_require"]
    assert f"CUDA {version}" in hint


def test_the_hint_for_a_cpu_build_and_an_unknown_cuda():
    cpu = forget_mult_cuda.install_hint(None)
    assert "CPU build" in cpu and "[cuda12]" in cpu
    other = forget_mult_cuda.install_hint("11.8")
    assert "cupy-cuda11x" in other and "[cuda" not in other
