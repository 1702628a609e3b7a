"""Training metrics: one JSON object per step in a JSONL file, and a loss-curve PNG at the end.

Each line holds at least `step` (1-based count of finished optimizer steps), `loss` (mean token
loss of the global batch, nats), `lr` and `tokens_per_s`. Floats are written with `repr` precision,
so a loss read back is bit-equal to the one logged (the resume tests compare them exactly). A
resumed run appends to the file after dropping lines for steps at or past the resume point."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsWriter:
    """Append-only JSONL writer; `resume_from=s` keeps records with `step <= s` already there."""

    def __init__(self, path: str | os.PathLike, *, resume_from: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_from > 0 and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed run
                if isinstance(rec, dict) and int(rec.get("step", 0)) <= resume_from:
                    kept.append(line)
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in kept)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file, in file order."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def plot_loss_curve(
    records: Iterable[Mapping[str, Any]],
    png_path: str | os.PathLike,
    *,
    title: str = "training loss",
    reference: Mapping[str, float] | None = None,
) -> Path | None:
    """Write loss vs step (and lr on a second axis) to a PNG; None when matplotlib is missing.

    `reference` draws labelled horizontal lines, e.g. {"unigram entropy": 7.1}.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no loss curve written (pip install matplotlib)")
        return None
    records = list(records)
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], lw=1, color="tab:blue", label="loss")
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="tab:gray")
        ax.annotate(
            f"{name} {value:.2f}",
            (steps[0] if steps else 0, value),
            fontsize=8,
            va="bottom",
            color="tab:gray",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    if records and "lr" in records[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in records], lw=0.8, color="tab:orange", alpha=0.6)
        ax2.set_ylabel("learning rate", color="tab:orange")
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
