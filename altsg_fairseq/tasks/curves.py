"""The per-epoch learning-curve CSV written beside the checkpoints (like the seed's log)."""

import csv
import math
import os
from typing import Dict

COLUMNS = ("epoch", "seconds", "train_loss", "valid_loss", "train_ppl", "valid_ppl", "lr", "synthetic", "restart")
FILENAME = "curves.csv"


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
        writer.writerows(kept)
        writer.writerow({k: format_value(row[k]) for k in COLUMNS})
    os.replace(tmp, path)


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}" if math.isfinite(value) else str(value)
