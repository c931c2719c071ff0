import os

import pytest

from altsg_fairseq import checkpoint_io
from helpers import REPO, run_cli


def test_copy_is_atomic_when_interrupted(tmp_path, monkeypatch):
    src, dst = tmp_path / "checkpoint_best.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old checkpoint")

    def killed_midway(a, b):  # writes half of the file, then dies
        with open(b, "wb") as f:
            f.write(open(a, "rb").read()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.shutil, "copyfile", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"old checkpoint"  # untouched, no partial file left
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_best.pt", "checkpoint_last.pt"]
    monkeypatch.undo()
    os.chmod(src, 0o644)  # as fairseq's checkpointN.pt
    assert checkpoint_io.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_mode & 0o777 == 0o644  # colleagues can read the copy too


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None], ids=["empty", "garbage", "truncated"])
def test_corrupted_checkpoint_gives_one_clear_line(sample_bin, tmp_path, content):
    bad = tmp_path / "checkpoint_last.pt"
    if content is None:  # the first half of a real checkpoint
        import torch

        torch.save({"model": {"w": torch.zeros(1000)}}, bad)
        bad.write_bytes(bad.read_bytes()[: os.path.getsize(bad) // 2])
    else:
        bad.write_bytes(content)
    proc = run_cli(
        "fairseq-eval-lm",
        sample_bin,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        bad,
        "--cpu",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot read checkpoint" in proc.stderr.strip().splitlines()[-1]
