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
