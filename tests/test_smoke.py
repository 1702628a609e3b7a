"""`dataprep smoke`: the end-to-end recipe (quick mode), and its unigram-entropy baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.commands.smoke import _load_recipe


def test_unigram_entropy_in_nats():
    recipe = _load_recipe()
    assert recipe.unigram_entropy(np.array([0, 0, 1, 1])) == pytest.approx(math.log(2))
    assert recipe.unigram_entropy(np.array([7, 7, 7])) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    tokens = np.array([3, 3, 9, 4])
    assert recipe.unigram_entropy(tokens) == pytest.approx(float(-(p * np.log(p)).sum()))


def test_the_full_recipe_trains_each_model_a_few_hundred_steps():
    recipe = _load_recipe()
    names = [r.name for r in recipe.FULL_RUNS]
    assert names == ["gpt", "mt5"]
    assert all(100 <= r.steps <= 500 for r in recipe.FULL_RUNS)  # "a few hundred steps"


@pytest.mark.slow
@pytest.mark.distributed
def test_dataprep_smoke_quick(tmp_path, capsys):
    out_dir = tmp_path / "smoke"
    (out_dir / "gpt").mkdir(parents=True)
    (out_dir / "gpt" / "stale.txt").write_text("from an earlier run")
    (out_dir / "keep.txt").write_text("not ours")
    code = main(["smoke", "--quick", "--output", str(out_dir), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    for stage in range(1, 7):
        assert f"== [{stage}/6]" in out
    assert "pile_text_document.bin/.idx: 308 documents" in out
    assert "<extra_id_0>" in out  # the masking preview
    lines = [line for line in out.splitlines() if "unigram entropy" in line]
    assert len(lines) == 4 and all("not judged (--quick)" in line for line in lines)
    assert all("loss: step 1 " in line and ", mean of last 6 " in line for line in lines)
    for name in ("gpt", "mt5"):
        assert (out_dir / name / "metrics.jsonl").is_file()
        assert (out_dir / name / "metrics.png").is_file()
        assert (out_dir / name / "checkpoint" / "latest").is_file()
    assert not (out_dir / "gpt" / "stale.txt").exists()  # its own outputs are replaced
    assert out.startswith(f"replacing the previous run's {out_dir / 'gpt'}\n")  # and it says so
    assert (out_dir / "keep.txt").exists()  # nothing else is touched
    assert "GPT2LMHeadModel" in out and "loaded by AutoModelForCausalLM" in out
    assert (out_dir / "gpt" / "hf" / "model.safetensors").is_file()


def test_a_flag_mistake_leaves_the_last_runs_outputs_alone(tmp_path, capsys):
    kept = tmp_path / "smoke" / "gpt" / "checkpoint" / "kept.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("the last run's checkpoint")
    for flag in ("--tensor-model-parallel-size", "--workers"):
        assert main(["smoke", flag, "0", "--output", str(tmp_path / "smoke")]) == 2
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
        assert kept.exists()
