"""Every checkpoint file a command reads is unpickled with weights_only: a pickle whose
`__reduce__` would run code (here: create a file) is refused with one line naming the file and
the global it asked for (exit 1), and the code never runs. Older checkpoints, whose trainer state
holds NumPy arrays, still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataprep.cli import main as cli_main
from tests.trainer.trainer_fixtures import train_tiny_gpt

ROOT = Path(__file__).resolve().parents[2]
LAMBADA = str(ROOT / "pipelines" / "lm_eval_tasks" / "toy_lambada.jsonl")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_gpt(tmp_path_factory.mktemp("safe"))


def _poisoned(trained, tmp_path: Path, target: str) -> tuple[Path, Path]:
    src, _ = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(src, ckpt)
    (it,) = [p for p in ckpt.iterdir() if p.is_dir()]
    marker = tmp_path / "pwned"
    file = it / target
    payload = torch.load(file, weights_only=True)
    payload["evil"] = _Evil(marker)
    torch.save(payload, file)
    return ckpt, marker


COMMANDS = {
    "generate": lambda c, t, p: ["generate", c, "--prompt", "hi", "--tokens-to-generate", "2"],
    "fill-mask": lambda c, t, p: ["fill-mask", c, "--prompt", "a <mask>"],
    "export-hf": lambda c, t, p: ["export-hf", c, str(t / "hf")],
    "eval": lambda c, t, p: ["eval", c, "--lambada", LAMBADA, "--limit", "1"],
    "serve": lambda c, t, p: ["serve", c, "--port", "0"],
    "train --load": lambda c, t, p: ["train", "--data-path", p, "--load", c, "--train-iters", "3",
                                     "--seq-length", "32", "--micro-batch-size", "2",
                                     "--no-progress"],
}  # fmt: skip


@pytest.mark.parametrize("target", ["extra_tp00_dp000.pt", "model_tp00.pt"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_poisoned_pickle_is_refused_and_never_runs(trained, tmp_path, capsys, command, target):
    if command == "serve":
        pytest.importorskip("uvicorn")
        pytest.importorskip("fastapi")
    ckpt, marker = _poisoned(trained, tmp_path, target)
    argv = COMMANDS[command](str(ckpt), tmp_path, trained[1])
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{target}: refused to load" in err[0] and "its pickle asks for exec," in err[0]
    assert not marker.exists()
    assert not (tmp_path / "hf").exists()


def test_a_checkpoint_with_numpy_rng_state_still_loads(trained, tmp_path, capsys):
    """Before this change the trainer state held np.random.get_state() (a NumPy array)."""
    src, prefix = trained
    ckpt = tmp_path / "old"
    shutil.copytree(src, ckpt)
    (it,) = [p for p in ckpt.iterdir() if p.is_dir()]
    extra = torch.load(it / "extra_tp00_dp000.pt", weights_only=True)
    extra["rng"]["numpy"] = np.random.get_state()  # the old form: a tuple with an ndarray
    torch.save(extra, it / "extra_tp00_dp000.pt")
    argv = ["train", "--data-path", prefix, "--load", str(ckpt), "--train-iters", "3",
            "--seq-length", "32", "--micro-batch-size", "2", "--no-progress",
            "--save", str(tmp_path / "resumed")]  # fmt: skip
    assert cli_main(argv) == 0
    assert cli_main(["generate", str(ckpt), "--prompt", "hi", "--tokens-to-generate", "2"]) == 0
