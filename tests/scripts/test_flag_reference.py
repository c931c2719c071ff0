"""docs/flags.md is what scripts/flag_reference.py writes from the configs' help strings (it cannot drift)."""

import dataclasses
import subprocess
import sys

from helpers import REPO


def test_the_flag_reference_is_current():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "flag_reference.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_plugin_flag_is_in_it():
    from altsg_fairseq.tasks.config import AlternatingLMConfig

    text = (REPO / "docs" / "flags.md").read_text()
    own = [f.name for f in dataclasses.fields(AlternatingLMConfig) if f.metadata.get("help") and f.name != "data"]
    assert own and all(f"`--{name.replace('_', '-')}`" in text for name in own)
