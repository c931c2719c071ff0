"""The per-epoch learning-curve CSV written beside the checkpoints (like the original code's log)."""

import csv
import math
import os
import time
from typing import Dict, Optional

COLUMNS = (
    "epoch",
    "seconds",
    "train_loss",
    "valid_loss",
    "train_ppl",
    "valid_ppl",
    "lr",
    "synthetic",
    "restart",
    "sg_cos",
    "sg_norm_ratio",
    "sg_inject_ratio",
)
DIAGNOSTICS = COLUMNS[-3:]  # the epoch's synthetic-gradient diagnostics (nan without --use-sg)
FILENAME = "curves.csv"


class LearningCurve:
    """One row of ``<save-dir>/curves.csv`` per epoch (docs/method.md#evaluation-and-outputs).

    ``begin_epoch`` starts the epoch's clock, ``set_lr`` notes its learning
    rate, and the first ``end_validation`` of the epoch writes the row:
    losses in nats without the AR/TAR terms, ppl = exp(loss), seconds of
    training and validation, and the epoch's synthetic-gradient diagnostics
    (``DIAGNOSTICS``, as the training log's). ``path`` None writes nothing.
    """

    def __init__(self, path: Optional[str]):
        self.path = path
        self.row: Dict[str, float] = {"epoch": 1, "synthetic": False, "restart": False, "lr": float("nan")}
        self.start = time.time()
        self.written = False
        self.new_file = False  # keep the earlier rows apart before the first write

    def begin_epoch(self, epoch: int, synthetic: bool, restart: bool) -> None:
        self.row.update(epoch=epoch, synthetic=synthetic, restart=restart)
        self.start = time.time()

    def set_lr(self, lr: float) -> None:
        self.row["lr"] = lr

    def start_new_file(self) -> Optional[str]:
        """Keep the rows written so far under another name (the run's flags changed) when this run
        writes its first row (so that a run refused while it resumes leaves the file as it was);
        returns that name, or None when there were none."""
        if self.path is None or not os.path.isfile(self.path):
            return None
        self.new_file = True
        return os.path.basename(self._previous())

    def _previous(self) -> str:
        stem, n = self.path[: -len(".csv")], 1
        while os.path.exists(f"{stem}.previous-{n}.csv"):
            n += 1
        return f"{stem}.previous-{n}.csv"

    def begin_validation(self) -> None:
        self.written = False

    def end_validation(self, train_bits: float, valid_bits: float, diagnostics: Dict[str, float]) -> None:
        """Write the epoch's row (once per epoch) from fairseq's per-token losses in bits."""
        if self.written or self.path is None:
            return
        self.written = True
        if self.new_file:
            self.new_file = False
            if os.path.isfile(self.path):
                os.replace(self.path, self._previous())
        # fairseq logs base-2 losses (bits); the CSV keeps the original code's nats
        train_loss, valid_loss = train_bits * math.log(2), valid_bits * math.log(2)
        write_row(
            self.path,
            dict(
                self.row,
                seconds=time.time() - self.start,
                train_loss=train_loss,
                valid_loss=valid_loss,
                train_ppl=perplexity(train_loss),
                valid_ppl=perplexity(valid_loss),
                **{k: float(diagnostics.get(k, float("nan"))) for k in DIAGNOSTICS},
            ),
        )


def perplexity(nats: float) -> float:
    """exp(loss), inf for a loss too large to exponentiate (a diverged run)."""
    return math.exp(nats) if nats < 709.0 else float("inf")


def write_row(path: str, row: Dict[str, float]) -> None:
    """Write ``row`` (COLUMNS; losses in nats) as the last line of the CSV at ``path``.

    Rows of the same or later epochs are dropped first, so a run resumed from
    an earlier checkpoint rewrites its history instead of duplicating it. The
    file is replaced atomically.
    """
    kept = []
    if os.path.isfile(path):
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < row["epoch"]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "nan") for k in COLUMNS} for r in kept)  # rows of an older layout
        writer.writerow({k: format_value(row[k]) for k in COLUMNS})
    os.replace(tmp, path)


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}" if math.isfinite(value) else str(value)
