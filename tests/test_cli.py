"""Every command has help and a README entry; `python -m dataprep --help` needs no torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from dataprep.cli import COMMANDS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_has_help_and_readme_entry(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 200
    assert f"dataprep {command}" in README


def test_module_entry_point_help_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['dataprep', '--help']\n"
        "try:\n    runpy.run_module('dataprep', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "build-index" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def _early_breaks(text: str) -> list[str]:
    """Prose lines of a --help description broken before the next word had to go down."""
    width = max(len(line) for line in text.splitlines())
    found = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.splitlines()
        if not lines or lines[0].rstrip().endswith(":"):  # "examples:" and other lists
            continue
        for a, b in zip(lines, lines[1:], strict=False):
            if a.startswith(" ") or b.startswith(" ") or not b.split():
                continue
            if len(a) + 1 + len(b.split()[0]) <= width:
                found.append(f"{a!r} / {b!r}")
    return found


@pytest.mark.parametrize(
    "command",
    sorted(COMMANDS),
)
def test_help_description_is_not_broken_mid_sentence(command):
    import importlib

    module = importlib.import_module(f"dataprep.commands.{COMMANDS[command]}")
    assert _early_breaks(getattr(module, "DESCRIPTION", module.HELP)) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_misspelled_flag_is_named_with_the_commands_usage(command, capsys):
    """`--worker` for `--workers` was silently taken (argparse abbreviations); now no flag is
    abbreviated and an unknown one is reported by the subcommand's parser."""
    with pytest.raises(SystemExit) as e:
        main([command, "--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: dataprep {command} ")
    assert err.rstrip().splitlines()[-1].startswith(f"dataprep {command}: error: ")
    assert "--no-such-flag" in err or "required" in err  # missing required args may come first


def test_flags_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit):
        main(["build-index", "--input", "x", "--output-prefix", "y", "--worker", "2"])
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith("dataprep build-index: error: unrecognized arguments: --worker 2")
    )
    with pytest.raises(SystemExit):
        main(["--verb", "inspect", "x"])  # a top-level flag is the top-level parser's
    assert (
        capsys.readouterr().err.rstrip().endswith("dataprep: error: unrecognized arguments: --verb")
    )
