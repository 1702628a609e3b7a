"""Resume state of an interrupted build: `{output_prefix}.dataprep-build/state.json` plus, per
key, the writer state and the provenance so far, saved after every finished input file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.build.config import KeyStats
from dataprep.fileio import save_npy_atomic, write_json_atomic


def save_state(
    work: Path,
    fingerprint: str,
    done_files: int,
    stats: dict[str, KeyStats],
    read_stats,
    inputs: list[dict[str, Any]],
    provenance: dict[str, list[np.ndarray]],
    writers,
    *,
    text_bytes: int = 0,
) -> None:
    """Checkpoint after a finished input file: writers flushed, arrays saved, state.json last."""
    for key, w in writers.items():
        w.state().save(work / f"{key}.writer.npz")
        prov = np.concatenate(provenance[key]) if provenance[key] else np.zeros((0, 2), np.int64)
        provenance[key] = [prov]
        save_npy_atomic(work / f"{key}.provenance.npy", prov)
    write_json_atomic(
        work / "state.json",
        {
            "fingerprint": fingerprint,
            "done_files": done_files,
            "stats": {k: dataclasses.asdict(v) for k, v in stats.items()},
            "read": read_stats.to_dict(),
            "inputs": inputs,
            "text_bytes": text_bytes,  # text tokenized so far, over all runs
        },
    )
