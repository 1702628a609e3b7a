"""build-index --executor ray on a real local Ray (one session for the module): the bytes,
counts and provenance of a local build for any task count and --workers; a task whose worker is
killed is retried; bad records fail or are counted as locally; --resume after the driver stops
reuses finished partials."""

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_build import TEXTS, _records_with_problems, pile, run_build, write_zst

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = ("_text_document.bin", "_text_document.idx", "_text_document.provenance.npy")


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    arm = tmp_path_factory.mktemp("ray") / "kill-armed"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(REPO / "tests"), "DATAPREP_TEST_KILL_ARM": str(arm)},
            "worker_process_setup_hook": "ray_kill_hook.install",
        },
    )
    yield arm
    ray.shutdown()
    # ray.init left its SIGTERM handler (sys.exit) here; later tests fork pools (lm_eval's
    # bootstrap) whose workers must die on terminate(), not raise SystemExit holding a queue lock
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two compressed shards and one plain file large enough to be cut into byte ranges."""
    d = tmp_path_factory.mktemp("corpus")
    texts = [
        f"Document {i}: " + " ".join(TEXTS[i % 6] for _ in range(i % 4 + 1)) for i in range(240)
    ]
    write_zst(d / "a.jsonl.zst", pile(texts[:60]), frames=2)
    write_zst(d / "b.jsonl.zst", pile(texts[60:120]))
    (d / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pile(texts[120:])))
    return d


def same_outputs(a: Path, b: Path) -> None:
    for suffix in SUFFIXES:
        assert Path(f"{a}{suffix}").read_bytes() == Path(f"{b}{suffix}").read_bytes(), suffix
    ma, mb = (json.loads(Path(f"{p}_text_document.json").read_text()) for p in (a, b))
    for m in (ma, mb):  # the only fields that may differ: the time and the output's own name
        del m["created"], m["prefix"], m["provenance"]
        m.get("dedup", {}).pop("duplicates", None)
    assert ma == mb


def test_ray_gives_the_local_bytes_for_any_task_count(ray_session, corpus, tmp_path):
    common = ["--input", corpus, "--append-eod", "--chunk-mb", 0.002]
    local = tmp_path / "local"
    assert run_build(*common, "--workers", 2, "--output-prefix", local) == 0
    for split_mb, workers in ((64, 1), (0.003, 2)):  # 3 tasks, then 3 + several byte ranges
        out = tmp_path / f"ray{split_mb}"
        args = ["--executor", "ray", "--ray-split-mb", split_mb, "--workers", workers]
        assert run_build(*common, *args, "--output-prefix", out) == 0
        same_outputs(local, out)
    assert not list(tmp_path.glob("*.dataprep-build"))


def test_a_killed_task_is_retried_with_the_same_bytes(ray_session, corpus, tmp_path):
    local, out = tmp_path / "local", tmp_path / "ray"
    assert run_build("--input", corpus, "--workers", 1, "--output-prefix", local) == 0
    ray_session.write_text("")  # the next task to start kills its worker process
    assert run_build("--input", corpus, "--executor", "ray", "--output-prefix", out) == 0
    assert Path(f"{ray_session}.fired").exists() and not ray_session.exists()
    same_outputs(local, out)


def test_bad_records_fail_or_count_as_locally(ray_session, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the tasks run in the driver's directory
    src = write_zst(Path("in.jsonl.zst"), _records_with_problems(), frames=4)
    plain = Path("plain.jsonl")
    plain.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in _records_with_problems()
        )
    )
    for given in (src, plain):
        errors = []
        for executor in ("local", "ray"):
            out = tmp_path / f"fail-{executor}"
            args = ["--input", given, "--executor", executor, "--ray-split-mb", 0.002]
            assert run_build(*args, "--output-prefix", out) == 1
            errors.append(capsys.readouterr().err.strip().splitlines()[-1])
            assert not list(tmp_path.glob("fail-*"))
        assert errors[0] == errors[1] and f"error: {given}:6: not JSON" in errors[0]
    skip = ["--input", src, plain, "--skip-bad-records", "--filter", "pile_set_name=Pile-CC"]
    assert run_build(*skip, "--output-prefix", tmp_path / "l") == 0
    ray_args = ["--executor", "ray", "--ray-split-mb", 0.002]
    assert run_build(*skip, *ray_args, "--output-prefix", tmp_path / "r") == 0
    same_outputs(tmp_path / "l", tmp_path / "r")


def test_resume_after_the_driver_stops_reuses_finished_parts(
    ray_session, corpus, tmp_path, monkeypatch, caplog
):
    from dataprep.build.sink import Sink

    local, out = tmp_path / "local", tmp_path / "ray"
    assert run_build("--input", corpus, "--workers", 1, "--output-prefix", local) == 0
    original = Sink.append_part

    def stop_at_the_last_file(self, file_index, part_dir, result):
        if file_index == 2:
            raise KeyboardInterrupt  # the driver dies with every task finished
        return original(self, file_index, part_dir, result)

    monkeypatch.setattr(Sink, "append_part", stop_at_the_last_file)
    args = ["--input", corpus, "--executor", "ray", "--output-prefix", out]
    assert run_build(*args) == 130
    assert not Path(f"{out}_text_document.bin").exists()  # no pair that looks whole
    assert not Path(f"{out}_text_document.idx").exists()
    monkeypatch.setattr(Sink, "append_part", original)
    with caplog.at_level(logging.INFO, logger="dataprep.build.executor_ray"):
        assert run_build(*args, "--resume") == 0
    assert any("reusing 1 finished part(s)" in r.getMessage() for r in caplog.records)
    same_outputs(local, out)


def test_local_builds_do_not_import_ray(tmp_path):
    src = write_zst(tmp_path / "a.jsonl.zst", pile(TEXTS))
    code = (
        "import sys; from dataprep.cli import main; "
        f"rc = main(['build-index', '--input', {str(src)!r}, '--output-prefix', "
        f"{str(tmp_path / 'o')!r}, '--workers', '2', '--no-progress']); "
        "assert rc == 0; assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


@pytest.mark.parametrize("mode", ["exact", "minhash"])
def test_dedup_on_ray_decides_as_locally(ray_session, tmp_path, mode):
    from tests.test_build_dedup import edited, essay

    originals = [essay(i, 200) for i in range(30)]
    texts = originals + [originals[4], edited(originals[8], 1, 0), originals[20]] + originals[:3]
    write_zst(tmp_path / "a.jsonl.zst", pile(texts[:20]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pile(texts[20:])))
    common = ["--input", tmp_path / "a.jsonl.zst", tmp_path / "b.jsonl", "--dedup", mode]
    assert run_build(*common, "--workers", 2, "--output-prefix", tmp_path / "l") == 0
    ray_args = ["--executor", "ray", "--ray-split-mb", 0.01]  # b.jsonl in several ranges
    assert run_build(*common, *ray_args, "--output-prefix", tmp_path / "r") == 0
    same_outputs(tmp_path / "l", tmp_path / "r")
    a, b = (Path(f"{tmp_path / p}_text_document.duplicates.npy").read_bytes() for p in "lr")
    assert a == b
    removed = json.loads(Path(f"{tmp_path / 'l'}_text_document.json").read_text())["dedup"]
    assert sum(removed["removed"].values()) == (6 if mode == "minhash" else 5)


def test_a_ray_build_of_its_own_prints_only_its_summary(tmp_path):
    """The driver starts (and stops) its own local Ray: stderr holds none of Ray's notices (the
    token-authentication one of every ray.init), stdout the two summary lines."""
    src = write_zst(tmp_path / "a.jsonl.zst", pile(TEXTS))
    out = subprocess.run(
        [sys.executable, "-m", "dataprep", "build-index", "--input", str(src),
         "--output-prefix", str(tmp_path / "o"), "--executor", "ray", "--workers", "1",
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.startswith("read 1 input file(s)") and len(out.stdout.splitlines()) == 2
