"""build-index as a newcomer meets it (issue 12): progress by input bytes, empty results, the
resume summary, and the same file given twice."""

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from dataprep.cli import main
from tests.test_build import TEXTS, pile, run_build, write_zst


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_percent_of_input_bytes(tmp_path, monkeypatch):
    for j in range(2):
        write_zst(tmp_path / f"{j}.jsonl.zst", pile([f"{j} {t}" for t in TEXTS] * 20))
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    args = ["build-index", "--input", str(tmp_path), "--output-prefix", str(tmp_path / "o")]
    assert main([*args, "--workers", "1", "--chunk-mb", "0.001"]) == 0
    frames = screen.getvalue().replace("\r", "\n")
    total = sum(p.stat().st_size for p in tmp_path.glob("*.jsonl.zst"))
    assert "100%" in frames and "2/2 files" in frames and "tokens" in frames
    assert f"/{total / 1e3:.2f}k" in frames or f"/{total}" in frames  # the total is known
    assert any(f" {p}%" in frames or f"{p}%|" in frames for p in range(1, 100))  # part-way


def test_progress_log_lines_have_percent_and_eta(tmp_path, caplog):
    for j in range(3):
        write_zst(tmp_path / f"{j}.jsonl.zst", pile([f"{j} {t}" for t in TEXTS] * 5))
    with caplog.at_level(logging.INFO, logger="dataprep.build.sink"):
        args = ["--input", tmp_path, "--output-prefix", tmp_path / "o", "--workers", 1]
        assert run_build(*args, "--log-interval", 30, "--chunk-mb", 0.001) == 0
    lines = [r.getMessage() for r in caplog.records if "of the input bytes" in r.getMessage()]
    percents = [float(m.split("files done, ")[1].split("%")[0]) for m in lines]
    assert len(percents) >= 3 and percents == sorted(percents) and 0 < percents[0] < 100
    assert all("ETA " in m for m in lines)
