"""`dataprep eval` and the lm-evaluation-harness model.

A GPT trained on the toy Pile (a 1024-id byte-level BPE trained on it, so a few seconds of
training learn something) and an untrained one. Split perplexity is checked against the windows
megatron-core's GPTDataset serves for that split; `--lambada` against the real lm_eval running
the shipped local task pipelines/lm_eval_tasks/toy_lambada.yaml through our registered model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dataprep.cli import main as cli_main
from trainer.inference.evaluate import encode_pair, lambada, lambada_pair, split_perplexity
from trainer.inference.loading import load_for_inference
from trainer.train import TrainConfig, run

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "pipelines" / "toy"
TASKS = ROOT / "pipelines" / "lm_eval_tasks"
LAMBADA = TASKS / "toy_lambada.jsonl"
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    assert cli_main(["train-tokenizer", "--type", "bpe", "--input", str(TOY / "pile"),
                     "--output", str(d / "bpe"), "--vocab-size", "1024"]) == 0  # fmt: skip
    assert cli_main(["build-index", "--input", str(TOY / "pile"), "--output-prefix",
                     str(d / "pile"), "--tokenizer", str(d / "bpe" / "tokenizer.json"),
                     "--append-eod", "--no-progress"]) == 0  # fmt: skip
    prefix = str(d / "pile_text_document")
    out = {"prefix": prefix}
    for name, steps, lr in (("trained", 100, 3e-3), ("untrained", 1, 1e-9)):
        cfg = TrainConfig(data_path=(prefix,), model="gpt-tiny", seq_length=64, train_iters=steps,
                          micro_batch_size=8, lr=lr, min_lr=lr / 10, lr_warmup_iters=0,
                          num_threads=2, progress=False, save=str(d / name),
                          hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
        assert run(cfg) == 0
        out[name] = str(d / name)
    return out


def _megatron_valid_windows(prefix: str, seq_length: int, seed: int, split: str, cache: str):
    mc = pytest.importorskip("megatron.core.datasets.gpt_dataset")
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )

    class Tok:  # the attributes GPTDataset reads; pad -1 (no real id) as megatron-core's default
        vocab_size, eod, eos, pad = 1024, 0, 0, -1
        unique_identifiers = {"class": "Tok", "vocab_size": 1024}

    cfg = mc.GPTDatasetConfig(random_seed=seed, sequence_length=seq_length, blend=([prefix], None),
                              split=split, reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False, tokenizer=Tok(), path_to_cache=cache,
                              mmap_bin_files=True)  # fmt: skip
    _, valid, _ = BlendedMegatronDatasetBuilder(mc.GPTDataset, [None, None, None], lambda: True,
                                                cfg).build()  # fmt: skip
    return valid


def test_split_perplexity_is_over_megatron_cores_valid_windows(setup, tmp_path):
    model, _, _ = load_for_inference(setup["trained"])
    ours = split_perplexity(model, setup["prefix"], split_name="valid", seq_length=64,
                            split="969,30,1", seed=1234, progress=False)  # fmt: skip
    valid = _megatron_valid_windows(setup["prefix"], 64, 1234, "969,30,1", str(tmp_path / "mc"))
    assert ours.windows == len(valid) > 100
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(valid), 64):
            items = [valid[k] for k in range(start, min(len(valid), start + 64))]
            tokens = torch.stack([torch.as_tensor(np.asarray(it["tokens"])) for it in items])
            labels = torch.stack([torch.as_tensor(np.asarray(it["labels"])) for it in items])
            mask = torch.stack([torch.as_tensor(np.asarray(it["loss_mask"])) for it in items]) > 0
            logits = model(tokens.long())[..., :1024].double()
            lp = logits.log_softmax(-1).gather(-1, labels.long()[..., None]).squeeze(-1)
            total -= float(lp[mask].sum())
            count += int(mask.sum())
    assert ours.tokens == count
    assert abs(ours.mean_loss - total / count) < 1e-5
    assert math.isclose(ours.perplexity, math.exp(total / count), rel_tol=1e-5)
    untrained, _, _ = load_for_inference(setup["untrained"])
    worse = split_perplexity(untrained, setup["prefix"], split_name="valid", seq_length=64,
                             split="969,30,1", seed=1234, progress=False)  # fmt: skip
    assert worse.mean_loss > ours.mean_loss + 1.0  # untrained ~ ln(1024) = 6.9


def test_lambada_with_lm_eval_equals_dataprep_eval_and_training_helps(
    setup, monkeypatch, capsys, tmp_path
):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    import trainer.inference.lm_eval_model  # noqa: F401  registers --model dataprep

    monkeypatch.chdir(tmp_path)  # the task finds its data beside its YAML, from any directory
    scores = {}
    tasks = TaskManager(include_path=str(TASKS), include_defaults=False)
    n = 200  # of the 500 records, to keep the test short (lm_eval's templating is most of it)
    for name in ("trained", "untrained"):
        res = lm_eval.simple_evaluate(model="dataprep", model_args=f"checkpoint={setup[name]}",
                                      tasks=["toy_lambada"], task_manager=tasks, limit=n,
                                      bootstrap_iters=0)  # fmt: skip
        got = res["results"]["toy_lambada"]
        assert got["sample_len"] == n
        argv = ["eval", setup[name], "--lambada", str(LAMBADA), "--limit", str(n), "--json"]
        assert cli_main(argv) == 0
        ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lambada"]
        assert ours["records"] == n
        assert got["acc,none"] == pytest.approx(ours["acc"], abs=1e-12)
        assert got["perplexity,none"] == pytest.approx(ours["perplexity"], rel=1e-6)
        scores[name] = ours
    assert scores["trained"]["acc"] > scores["untrained"]["acc"]
    assert scores["trained"]["perplexity"] < scores["untrained"]["perplexity"] / 3


def test_lambada_pairs_follow_lambada_openai_and_bad_files_name_the_line(setup, tmp_path, capsys):
    assert lambada_pair("a b c") == ("a b", " c")
    model, tok, _ = load_for_inference(setup["untrained"])
    ctx, cont = encode_pair(tok, "Hello my ", "friend")  # the trailing space joins the target
    assert tok.decode(ctx) == "Hello my" and tok.decode(cont) == " friend"
    r = lambada(model, tok, LAMBADA, limit=5)
    assert r.records == 5 and 0 <= r.acc <= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "one two"}\nnot json\n', encoding="utf-8")
    assert cli_main(["eval", setup["untrained"], "--lambada", str(bad)]) == 1
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    assert cli_main(["eval", setup["untrained"]]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert cli_main(["eval", setup["untrained"], "--data-path", str(tmp_path / "none")]) == 2
    assert cli_main(["eval", setup["untrained"], "--lambada", str(tmp_path / "none.jsonl")]) == 2


def test_shipped_lambada_file_is_what_the_script_makes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "toy_lambada.jsonl"
    subprocess.run([sys.executable, str(ROOT / "pipelines" / "make_toy_lambada.py"), "--output",
                    str(out)], check=True, capture_output=True)  # fmt: skip
    assert out.read_bytes() == LAMBADA.read_bytes()
    assert LAMBADA.stat().st_size < 300_000


def _ours(checkpoint: str, n: int, capsys) -> dict:
    argv = ["eval", checkpoint, "--lambada", str(LAMBADA), "--limit", str(n), "--json"]
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lambada"]


def test_the_documented_lm_eval_command_line_runs_our_model(setup, tmp_path, capsys):
    """`python -m trainer.inference.lm_eval_model --model dataprep ...` as README and --help show
    it."""
    import subprocess
    import sys

    pytest.importorskip("lm_eval")
    n = 40
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "trainer.inference.lm_eval_model", "--model", "dataprep",
           "--model_args", f"checkpoint={setup['trained']}", "--tasks", "toy_lambada",
           "--include_path", str(TASKS), "--limit", str(n), "--output_path", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "toy_lambada" in proc.stdout and "acc" in proc.stdout
    (result,) = out.rglob("results_*.json")
    got = json.loads(result.read_text())["results"]["toy_lambada"]
    ours = _ours(setup["trained"], n, capsys)
    assert got["acc,none"] == pytest.approx(ours["acc"], abs=1e-12)
    assert got["perplexity,none"] == pytest.approx(ours["perplexity"], rel=1e-6)


def test_lm_eval_hf_model_on_the_exported_folder_scores_as_ours(setup, tmp_path, capsys):
    """The other route: export-hf, then lm_eval's own `hf` model on that folder."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    import trainer.inference.lm_eval_model  # noqa: F401  registering ours must leave lm_eval's own models

    hf_dir = tmp_path / "hf"
    assert cli_main(["export-hf", setup["trained"], str(hf_dir)]) == 0
    capsys.readouterr()
    n = 40
    tasks = TaskManager(include_path=str(TASKS), include_defaults=False)
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},device=cpu",
                                  tasks=["toy_lambada"], task_manager=tasks, limit=n,
                                  bootstrap_iters=0, batch_size=8)  # fmt: skip
    got = res["results"]["toy_lambada"]
    ours = _ours(setup["trained"], n, capsys)
    assert got["acc,none"] == pytest.approx(ours["acc"], abs=1e-12)
    assert got["perplexity,none"] == pytest.approx(ours["perplexity"], rel=1e-4)


def test_dataprep_eval_tasks_runs_lm_eval_on_the_shipped_task(setup, capsys):
    pytest.importorskip("lm_eval")
    n = 40
    assert cli_main(["eval", setup["trained"], "--tasks", "toy_lambada", "--limit", str(n),
                     "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    # stdout is the one JSON object; lm_eval's own prints (bootstrapping ...) went to stderr
    got = json.loads(captured.out)["lm_eval"]["toy_lambada"]
    assert "bootstrapping" in captured.err and "--metadata" not in captured.err
    ours = _ours(setup["trained"], n, capsys)
    assert got["acc,none"] == pytest.approx(ours["acc"], abs=1e-12)
    assert got["perplexity,none"] == pytest.approx(ours["perplexity"], rel=1e-6)
    assert cli_main(["eval", setup["trained"], "--tasks", "no_such_task"]) == 2
    err = capsys.readouterr().err
    assert "no lm_eval task no_such_task" in err and "toy_lambada" in err
    assert (
        cli_main(["eval", setup["trained"], "--tasks", "x", "--include-path", "/nonexistent"]) == 2
    )
    assert "--include-path /nonexistent: no such directory" in capsys.readouterr().err
