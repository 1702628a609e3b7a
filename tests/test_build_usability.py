"""build-index as a newcomer meets it: progress by input bytes, empty results, the
resume summary, and the same file given twice."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataprep.cli import main
from tests.test_build import TEXTS, pile, run_build, write_zst

REPO = Path(__file__).resolve().parents[1]


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
    with caplog.at_level(logging.INFO, logger="dataprep.build.progress"):
        args = ["--input", tmp_path, "--output-prefix", tmp_path / "o", "--workers", 1]
        assert run_build(*args, "--log-interval", 30, "--chunk-mb", 0.001) == 0
    lines = [r.getMessage() for r in caplog.records if "of the input bytes" in r.getMessage()]
    percents = [float(m.split("files done, ")[1].split("%")[0]) for m in lines]
    assert len(percents) >= 3 and percents == sorted(percents) and 0 < percents[0] < 100
    assert all("ETA " in m for m in lines)


def test_a_filter_that_matches_nothing_is_an_error_naming_the_values(tmp_path, capsys):
    src = write_zst(tmp_path / "a.jsonl.zst", pile(TEXTS[:4], "Github") + pile(TEXTS[4:]))
    out = tmp_path / "o"
    args = ["--input", src, "--output-prefix", out, "--workers", 1]
    assert run_build(*args, "--filter", "pile_set_name=github") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--filter pile_set_name=github filtered out all 6 records" in err
    assert "'Github' (4)" in err and "'Pile-CC' (2)" in err and "--allow-empty" in err
    assert list(tmp_path.glob("o*")) == []  # no dataset, no resume state
    # --allow-empty writes the empty dataset, which megatron-core can open
    assert run_build(*args, "--filter", "pile_set_name=github", "--allow-empty") == 0
    manifest = json.loads(Path(f"{out}_text_document.json").read_text())
    assert manifest["documents"] == 0 and manifest["read"]["skipped"]["filtered"] == 6


def test_every_file_bad_is_an_error(tmp_path, capsys):
    for name in ("a.jsonl.zst", "b.jsonl.zst"):
        blob = write_zst(tmp_path / name, pile(TEXTS * 50)).read_bytes()
        (tmp_path / name).write_bytes(blob[:20])
    args = ["--input", tmp_path, "--output-prefix", tmp_path / "out" / "o", "--workers", 1]
    assert run_build(*args, "--skip-bad-files") == 1
    err = capsys.readouterr().err
    assert "every input file was skipped as bad" in err
    assert "a.jsonl.zst (truncated)" in err and "b.jsonl.zst (truncated)" in err


def test_languages_matching_no_file_and_all_empty_texts_are_errors(tmp_path, capsys):
    src = write_zst(tmp_path / "c4-ja.tfrecord-00000-of-00001.json.gz", [{"text": "x"}])
    args = ["--input", src, "--output-prefix", tmp_path / "o", "--workers", 1]
    assert run_build(*args, "--languages", "de") == 1
    assert "--languages de matched none of the 1 input file(s)" in capsys.readouterr().err
    blank = write_zst(tmp_path / "blank.jsonl.zst", pile(["", ""]))
    assert run_build("--input", blank, "--output-prefix", tmp_path / "b", "--workers", 1) == 1
    assert "empty_text=2" in capsys.readouterr().err


def test_resume_summary_separates_this_run_from_the_whole_build(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for j in range(3):
        write_zst(inputs / f"{j}.jsonl.zst", pile([f"{j}.{i} {t}" for i, t in enumerate(TEXTS)]))
    good = (inputs / "2.jsonl.zst").read_bytes()
    (inputs / "2.jsonl.zst").write_bytes(good[:30])  # the first run stops at the third file
    args = ["--input", inputs, "--output-prefix", tmp_path / "o", "--workers", 1]
    assert run_build(*args) == 1
    capsys.readouterr()
    (inputs / "2.jsonl.zst").write_bytes(good)
    assert run_build(*args, "--resume") == 0
    out = capsys.readouterr().out.splitlines()
    tokens = json.loads(Path(f"{tmp_path / 'o'}_text_document.json").read_text())["tokens"]
    assert out[0].startswith("this run: 1 of 3 input file(s), 6 records, ")
    run_tokens = int(out[0].split(" MB of text, ")[1].split(" tokens")[0].replace(",", ""))
    assert 0 < run_tokens < tokens / 2  # one file of three: this run's share, not the total
    assert out[1].startswith(
        "whole build (resumed after 2 finished file(s)): 3 input file(s), 18 records"
    )
    assert f"18 documents, 18 sequences, {tokens:,} tokens, largest id" in out[2]
    # a build in one run keeps the one-line header
    assert run_build(*args[:-2], "--workers", 1, "--overwrite") == 0
    assert capsys.readouterr().out.startswith("read 3 input file(s), 18 records, ")


def test_one_file_behind_two_symlinks_is_read_once_with_a_warning(tmp_path, caplog):
    store, inputs = tmp_path / "store", tmp_path / "in"
    store.mkdir()
    inputs.mkdir()
    write_zst(store / "real.jsonl.zst", pile(TEXTS))
    (inputs / "a.jsonl.zst").symlink_to(store / "real.jsonl.zst")
    (inputs / "b.jsonl.zst").symlink_to(store / "real.jsonl.zst")
    write_zst(inputs / "c.jsonl.zst", pile(TEXTS[:2]))
    with caplog.at_level(logging.WARNING, logger="dataprep.readers"):
        args = ["--input", inputs, inputs / "c.jsonl.zst", "--output-prefix", tmp_path / "o"]
        assert run_build(*args, "--workers", 1) == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        "a.jsonl.zst and " in m and "b.jsonl.zst are the same file" in m and "read once" in m
        for m in warnings
    )
    assert any("c.jsonl.zst is given more than once" in m for m in warnings)
    manifest = json.loads(Path(f"{tmp_path / 'o'}_text_document.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["a.jsonl.zst", "c.jsonl.zst"]
    assert manifest["documents"] == len(TEXTS) + 2


# A driver whose every tokenizer task takes 0.3 s (forked workers inherit the patch), so a test
# can stop it while its worker pool is busy.
_SLOW_DRIVER = """
import sys, time
from dataprep.build import executor_local
from dataprep.cli import main
task = executor_local.run_task
executor_local.run_task = lambda t: (time.sleep(0.3), task(t))[1]
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _slow_build(tmp_path: Path) -> tuple[subprocess.Popen, list[int], Path]:
    """Two input files (the first small), --workers 2; returns once the pool is running."""
    small = write_zst(tmp_path / "0.jsonl.zst", pile(TEXTS))
    big = tmp_path / "1.jsonl"
    big.write_text(
        "".join(json.dumps({"text": f"{i} {TEXTS[i % 6]}"}) + "\n" for i in range(60000))
    )
    prefix = tmp_path / "o"
    with open(tmp_path / "stderr", "w") as err:  # a file: orphans cannot hold a pipe open
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_DRIVER, "build-index", "--input", str(small), str(big),
             "--output-prefix", str(prefix), "--workers", "2", "--no-progress"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(kids := _children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, _stderr(tmp_path)
        time.sleep(0.05)
    return proc, kids, prefix


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr").read_text()


def _gone(pids: list[int], timeout: float = 10) -> bool:
    """Whether all of `pids` exit within `timeout` s; any left are killed (the test's cleanup)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in pids if _alive(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    return not alive


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_killed_driver_takes_its_workers_with_it(tmp_path):
    proc, workers, prefix = _slow_build(tmp_path)
    proc.kill()  # SIGKILL: no handler of the driver runs
    proc.wait(timeout=60)
    assert _gone(workers), "tokenizer workers outlived their kill -9'd driver"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_is_an_interruption_with_the_resume_hint(tmp_path):
    proc, workers, prefix = _slow_build(tmp_path)
    state = Path(f"{prefix}.dataprep-build") / "state.json"
    deadline = time.monotonic() + 60
    while not (state.exists() and json.loads(state.read_text())["done_files"] == 1):
        assert proc.poll() is None and time.monotonic() < deadline, _stderr(tmp_path)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    workers_gone = _gone(workers)
    assert proc.returncode == 143, _stderr(tmp_path)
    lines = _stderr(tmp_path).strip().splitlines()
    assert lines[-2] == f"interrupted; rerun with --resume to continue from {prefix}.dataprep-build"
    assert lines[-1] == "dataprep build-index: terminated (SIGTERM)"
    assert workers_gone
    assert not Path(f"{prefix}_text_document.idx").exists()


def test_a_forked_pool_under_the_cli_handler_still_terminates(tmp_path):
    """multiprocessing.Pool.terminate() SIGTERMs its workers: they must die, not raise the CLI's
    Terminated (which hung lm_eval's bootstrap pool under `dataprep eval --tasks`)."""
    code = (
        "import multiprocessing as mp, signal, sys\n"
        "from dataprep.signals import terminate_as_interrupt\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # an earlier handler, as Ray's\n"
        "with terminate_as_interrupt():\n"
        "    for _ in range(60):\n"
        "        with mp.get_context('fork').Pool(2) as pool:\n"
        "            assert sum(pool.imap(abs, range(-500, 500), chunksize=10)) == 250000\n"
        "print('ok')\n"
    )
    try:  # before the fix this hung within a few pools (a worker died holding the queue's lock)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("a Pool's terminate() hung: its workers kept the CLI's SIGTERM handler")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
