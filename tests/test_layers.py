"""The layers hold: the library never imports the trainer and the trainer never imports the CLI
(benchmarks/structure.py reads the imports with `ast`); config errors name fields, the CLI flags."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dataprep.cli import main
from dataprep.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _structure():
    spec = importlib.util.spec_from_file_location("structure", REPO / "benchmarks" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["structure"] = module
    spec.loader.exec_module(module)
    return module.measure(REPO)


@pytest.fixture(scope="module")
def structure():
    return _structure()


def test_no_library_module_imports_the_trainer_and_the_trainer_never_imports_the_cli(structure):
    assert structure["layer_violations"] == []


def test_no_import_cycles_between_modules(structure):
    assert structure["import_cycles"] == []


def test_a_config_error_names_fields_in_the_library_and_flags_in_the_cli(capsys, monkeypatch):
    error = ConfigError(
        "{micro_batch_size} must be >= 1, got 0 (see {seq_length})",
        "micro_batch_size",
        "seq_length",
    )
    assert str(error) == "micro_batch_size must be >= 1, got 0 (see seq_length)"
    import pickle

    again = pickle.loads(pickle.dumps(error))
    assert (again.template, again.fields, str(again)) == (error.template, error.fields, str(error))

    def failing(args):
        raise error

    import dataprep.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["inspect", "x"])
    args._run = failing
    monkeypatch.setattr(cli, "_parse", lambda parser, argv: args)
    assert main(["inspect", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "dataprep inspect: error: --micro-batch-size must be >= 1, got 0 (see --seq-length)"
    )


def test_library_errors_name_config_fields_not_command_line_flags():
    """Flag names live in the CLI: an error raised by library code names no `--flag` (a pip
    command it suggests aside); the CLI turns the fields it names into flags."""
    import ast
    import re

    flag = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
    found = []
    for path in sorted([*REPO.glob("dataprep/**/*.py"), *REPO.glob("trainer/**/*.py")]):
        if "commands" in path.parts or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for sub in ast.walk(node.exc):
                text = sub.value if isinstance(sub, ast.Constant) else None
                if isinstance(text, str) and flag.search(text.replace("pip install --", "")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text.strip()}")
    assert found == []


def test_a_missing_text_key_names_the_field_in_the_library_and_the_flag_in_the_cli(
    tmp_path, capsys
):
    from dataprep.errors import ReadError

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"body": "hello"}\n', encoding="utf-8")
    error = ReadError(corpus, "missing key 'text'", line=1, kind="missing_key")
    assert str(error).endswith("missing key 'text'; choose the text keys with json_keys")
    code = main(
        ["build-index", "--input", str(corpus), "--output-prefix", str(tmp_path / "out"),
         "--tokenizer-type", "GPT2BPETokenizer"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert f"{corpus}:1: missing key 'text'" in err
    assert "choose the text keys with --json-keys" in err


def test_a_skipped_record_is_logged_by_the_cli_with_the_flag(tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "hello"}\n{"body": "x"}\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "dataprep", "build-index", "--input", str(corpus),
         "--output-prefix", str(tmp_path / "out"), "--tokenizer-type", "GPT2BPETokenizer",
         "--skip-bad-records"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        f"skipped {corpus}:2: missing key 'text' (keys found: 'body'); "
        "choose the text keys with --json-keys"
    ) in done.stderr


def _config_error_rank() -> int:  # a rank of the test below
    from trainer.launch import rank_main

    def work(payload: str) -> int:
        raise ConfigError("{micro_batch_size} must be >= 1, got 0", "micro_batch_size")

    return rank_main(work, name="test")


@pytest.mark.distributed
def test_a_config_error_in_a_rank_is_printed_once_by_the_cli_with_flags(capfd, monkeypatch):
    import os

    import dataprep.cli as cli
    from trainer.launch import launch_local

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO)]))

    def two_ranks(args):
        return launch_local(2, "test_layers:_config_error_rank", "", report_errors=True)

    args = cli.build_parser().parse_args(["inspect", "x"])
    args._run = two_ranks
    monkeypatch.setattr(cli, "_parse", lambda parser, argv: args)
    assert main(["inspect", "x"]) == 2
    lines = [x for x in capfd.readouterr().err.splitlines() if x.strip()]
    assert lines == ["dataprep inspect: error: --micro-batch-size must be >= 1, got 0"]


def test_a_data_config_error_keeps_its_class_and_exit_code_across_processes():
    import pickle

    from dataprep.build.empty import EmptyResultError
    from dataprep.errors import DataConfigError

    for cls, code in ((DataConfigError, 1), (EmptyResultError, 1), (ConfigError, 2)):
        error = cls("{data_path} holds token id 9 (braces {{kept}})", "data_path")
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is cls and again.exit_code == code
        assert again.render(lambda f: "--" + f.replace("_", "-")) == (
            "--data-path holds token id 9 (braces {kept})"
        )
