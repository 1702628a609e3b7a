"""trainer/train.py through the real loop: exact resume, TP=2 == TP=1, TP=2 checkpoint -> TP=1, the
launcher, and the one-line start-up errors for bad input."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_fixtures import markov_docs, write_dataset, write_mt5_dataset

from dataprep.errors import DataprepError, UsageError
from trainer.launch import PAYLOAD_ENV, launch_local
from trainer.train import TrainConfig, lr_at, run, train
from trainer.training.metrics import read_metrics

VOCAB = 1000


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gpt_prefix(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt")
    # ids < 100 of a 1000-id vocabulary: even a few steps learn that much (ln 1000 -> ln 100)
    return write_dataset(
        d / "gpt_text_document", markov_docs(120, vocab=100, seed=3), vocab_size=VOCAB
    )


@pytest.fixture(scope="module")
def mt5_prefix(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    return write_mt5_dataset(tmp_path_factory.mktemp("mt5") / "mc4_text_document", seed=4)


def gpt_config(prefix, tmp_path, **kw) -> TrainConfig:
    base = dict(
        data_path=(prefix,),
        model="gpt-tiny",
        seq_length=32,
        micro_batch_size=2,
        global_batch_size=4,
        train_iters=20,
        lr=3e-3,
        min_lr=3e-4,
        lr_warmup_iters=3,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        num_threads=1,
        progress=False,
        metrics=str(tmp_path / "metrics.jsonl"),
    )
    base.update(kw)
    return TrainConfig(**base)


def mt5_config(prefix, tmp_path, **kw) -> TrainConfig:
    base = dict(
        data_path=(prefix,),
        model="mt5-tiny",
        encoder_seq_length=32,
        micro_batch_size=2,
        train_iters=10,
        lr=1e-3,
        hidden_dropout=0.0,
        num_threads=1,
        progress=False,
        make_vocab_size_divisible_by=256,  # 8000 -> 8192 rows at TP 1 and at TP 2
        metrics=str(tmp_path / "metrics.jsonl"),
    )
    base.update(kw)
    return TrainConfig(**base)


def losses(path) -> list[float]:
    return [r["loss"] for r in read_metrics(path)]


# ------------------------------------------------------------------------------ schedule, config
def test_lr_warmup_then_cosine_to_min_lr():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=110)
    assert lr_at(0, **kw) == pytest.approx(1e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(60, **kw) == pytest.approx(5.5e-4)
    assert lr_at(110, **kw) == lr_at(500, **kw) == pytest.approx(1e-4)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_config_round_trips_through_json_and_rejects_bad_numbers():
    c = TrainConfig(data_path=("a",), lr=1e-3, min_lr=1e-4)
    assert TrainConfig.from_json(c.to_json()) == c
    with pytest.raises(UsageError, match="min_lr"):
        TrainConfig(data_path=("a",), lr=1e-4, min_lr=1e-3)
    with pytest.raises(UsageError, match="micro_batch_size"):
        TrainConfig(data_path=("a",), micro_batch_size=0)


# ------------------------------------------------------------------------------ the loop, TP=1
def test_metrics_loss_curve_and_learning(gpt_prefix, tmp_path):
    cfg = gpt_config(gpt_prefix, tmp_path, train_iters=30)
    result = train(cfg)
    records = read_metrics(cfg.metrics)
    assert [r["step"] for r in records] == list(range(1, 31))
    for key in ("loss", "lr", "tokens_per_s", "grad_norm", "data_wait_s"):
        assert all(isinstance(r[key], float) for r in records), key
    assert [r["loss"] for r in records] == result.losses
    assert Path(cfg.metrics).with_suffix(".png").stat().st_size > 1000
    # the data uses 100 of the 1000 ids: the loss must fall well below its start (ln 1000 = 6.9)
    assert np.mean(result.losses[-5:]) < result.losses[0] - 0.5
    assert 0.0 <= result.data_wait_share < 1.0


def test_kill_and_resume_gives_the_same_losses_exactly_tp1(gpt_prefix, tmp_path):
    straight = train(gpt_config(gpt_prefix, tmp_path / "a"))
    ckpt = tmp_path / "ckpt"
    first = train(gpt_config(gpt_prefix, tmp_path / "b", save=str(ckpt), exit_interval=10))
    assert first.end_step == 10 and (ckpt / "latest").is_file()
    second = train(gpt_config(gpt_prefix, tmp_path / "b", save=str(ckpt), load=str(ckpt)))
    assert second.start_step == 10 and second.end_step == 20
    assert first.losses + second.losses == straight.losses  # dropout 0.1: RNG restored too
    assert losses(tmp_path / "b" / "metrics.jsonl") == straight.losses


def test_gradient_accumulation_equals_one_big_micro_batch(gpt_prefix, tmp_path):
    a = train(
        gpt_config(
            gpt_prefix,
            tmp_path / "a",
            micro_batch_size=1,
            global_batch_size=4,
            train_iters=5,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
    )
    b = train(
        gpt_config(
            gpt_prefix,
            tmp_path / "b",
            micro_batch_size=4,
            global_batch_size=4,
            train_iters=5,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
    )
    assert np.allclose(a.losses, b.losses, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ TP=2 (spawned)
@pytest.mark.slow
@pytest.mark.distributed
def test_tp2_equals_tp1_and_tp2_checkpoints_resume_exactly_at_tp2_and_at_tp1(gpt_prefix, tmp_path):
    # lr 1e-3: at 3e-3 this run has a loss spike (6.5 -> 9.4 at step 8) that amplifies fp32
    # round-off between the TP sizes past 1e-5
    kw = dict(hidden_dropout=0.0, attention_dropout=0.0, save_interval=10, lr=1e-3, min_lr=1e-4)
    tp2 = gpt_config(
        gpt_prefix,
        tmp_path / "tp2",
        tensor_model_parallel_size=2,
        save=str(tmp_path / "ckpt"),
        **kw,
    )
    assert run(tp2) == 0
    tp2_losses = losses(tp2.metrics)
    assert len(tp2_losses) == 20
    tp1 = train(gpt_config(gpt_prefix, tmp_path / "tp1", **kw))
    assert np.allclose(tp2_losses[:10], tp1.losses[:10], rtol=0, atol=1e-5)
    # AdamW divides by sqrt(v): fp32 round-off in near-zero gradients grows a little per step
    assert np.allclose(tp2_losses, tp1.losses, rtol=0, atol=5e-5)

    at10 = str(tmp_path / "ckpt" / "iter_0000010")
    resumed2 = gpt_config(
        gpt_prefix, tmp_path / "r2", tensor_model_parallel_size=2, load=at10, **kw
    )
    assert run(resumed2) == 0
    assert losses(resumed2.metrics) == tp2_losses[10:]  # exact at the same TP

    resumed1 = train(gpt_config(gpt_prefix, tmp_path / "r1", load=at10, **kw))
    assert resumed1.start_step == 10
    assert np.allclose(resumed1.losses, tp2_losses[10:], rtol=0, atol=5e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_tp2_kill_and_resume_with_dropout_is_exact(gpt_prefix, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    straight = gpt_config(
        gpt_prefix, tmp_path / "a", tensor_model_parallel_size=2, save=ckpt, save_interval=10
    )  # saving reads state only: the run is unchanged
    assert run(straight) == 0
    resumed = gpt_config(
        gpt_prefix, tmp_path / "b", tensor_model_parallel_size=2, load=ckpt + "/iter_0000010"
    )  # a new pair of processes
    assert run(resumed) == 0
    assert losses(resumed.metrics) == losses(straight.metrics)[10:]  # dropout 0.1 on both


@pytest.mark.slow
@pytest.mark.distributed
def test_mt5_tp2_equals_tp1(mt5_prefix, tmp_path):
    tp2 = mt5_config(mt5_prefix, tmp_path / "tp2", tensor_model_parallel_size=2)
    assert run(tp2) == 0
    tp1 = train(mt5_config(mt5_prefix, tmp_path / "tp1"))
    a, b = np.array(losses(tp2.metrics)), np.array(tp1.losses)
    assert len(a) == len(b) == 10
    # mT5's HF init (untied head, std 1) starts near 40 nats, so fp32 round-off scales with it
    assert np.all(np.abs(a - b) <= 1e-5 * np.maximum(1.0, np.abs(b))), np.abs(a - b).max()


@pytest.mark.slow
@pytest.mark.distributed
def test_dp2_matches_dp1_on_the_same_global_batch(gpt_prefix, tmp_path):
    kw = dict(
        hidden_dropout=0.0,
        attention_dropout=0.0,
        train_iters=5,
        micro_batch_size=2,
        global_batch_size=4,
    )
    dp2 = gpt_config(gpt_prefix, tmp_path / "dp2", nproc_per_node=2, **kw)
    assert run(dp2) == 0
    dp1 = train(gpt_config(gpt_prefix, tmp_path / "dp1", **kw))
    assert np.allclose(losses(dp2.metrics), dp1.losses, rtol=0, atol=1e-5)


@pytest.mark.distributed
def test_bad_input_fails_on_every_rank_without_hanging(gpt_prefix, tmp_path, capfd):
    model = tmp_path / "gpt.json"
    model.write_text(json.dumps({"preset": "gpt-tiny", "vocab_size": 50257}))
    cfg = gpt_config(gpt_prefix, tmp_path, model=str(model), tensor_model_parallel_size=2)
    with pytest.raises(DataprepError, match="vocab_size 50257"):  # caught before the ranks start
        run(cfg)
    # with no parent to check first and no driver asking for the error: each rank reports it
    # (in the library's words: the config field, not the CLI's flag) and exits
    assert launch_local(2, "trainer.train:worker_main", cfg.to_json()) == 1
    err = capfd.readouterr().err
    for rank in (0, 1):
        assert f"train: error [rank {rank}]: model {model} has vocab_size 50257" in err


@pytest.mark.distributed
def test_a_rank_error_is_raised_in_the_driver(gpt_prefix, tmp_path, capfd):
    """With report_errors (train, generate), the error that failed a rank is raised once in the
    driver, its fields intact, instead of a line from each rank."""
    model = tmp_path / "gpt.json"
    model.write_text(json.dumps({"preset": "gpt-tiny", "vocab_size": 50257}))
    cfg = gpt_config(gpt_prefix, tmp_path, model=str(model), tensor_model_parallel_size=2)
    with pytest.raises(DataprepError, match="vocab_size 50257") as caught:
        launch_local(2, "trainer.train:worker_main", cfg.to_json(), report_errors=True)
    assert caught.value.exit_code == 1
    assert "error [rank" not in capfd.readouterr().err


def _sleep_or_fail() -> int:  # launched by test_launcher_stops_the_other_ranks
    import os
    import time

    if os.environ["RANK"] == "1" and not os.environ.get("RANK_SLEEPS"):
        return 3
    time.sleep(600)
    return 0


@pytest.mark.distributed
def test_launcher_stops_the_other_ranks_when_one_fails(monkeypatch):
    import time

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    t0 = time.monotonic()
    assert launch_local(2, "test_train:_sleep_or_fail", "", grace_s=2) == 3
    assert time.monotonic() - t0 < 60


@pytest.mark.distributed
def test_an_interrupted_launcher_stops_its_ranks_and_reraises(monkeypatch):
    """Ctrl-C or SIGTERM of the launching process is not a rank failure: the ranks are stopped
    and the interruption propagates, so the CLI says 'interrupted' / 'terminated', not 'exit
    code 130' (as the smoke once did)."""
    import os
    import threading
    import time

    from dataprep.signals import Terminated, terminate_as_interrupt

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.setenv("RANK_SLEEPS", "1")
    started = []
    real_popen = subprocess.Popen

    def popen(*a, **kw):
        started.append(real_popen(*a, **kw))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    timer = threading.Timer(3, os.kill, (os.getpid(), signal.SIGTERM))
    t0 = time.monotonic()
    with terminate_as_interrupt(), pytest.raises(Terminated):
        timer.start()
        launch_local(2, "test_train:_sleep_or_fail", "", grace_s=2)
    timer.cancel()
    assert time.monotonic() - t0 < 60
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def _abort_in_teardown() -> int:  # launched by test_teardown_abort_after_done_is_success
    import os

    from trainer.launch import mark_done

    rank = int(os.environ["RANK"])
    if os.environ.get(PAYLOAD_ENV) == "mark" or rank == 1:
        mark_done(rank)  # what teardown_distributed does after its barrier
    os.abort()  # as gloo's "terminate called without an active exception"


@pytest.mark.distributed
@pytest.mark.parametrize("payload, expected", [("mark", 0), ("", -signal.SIGABRT)])
def test_teardown_abort_after_done_is_success(monkeypatch, caplog, payload, expected):
    """A rank killed by SIGABRT after marking its work done succeeded; without the mark it
    failed (rank 0 aborts unmarked in the second case)."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    code = launch_local(2, "test_train:_abort_in_teardown", payload, grace_s=2)
    assert code == (0 if expected == 0 else 1)
    if expected == 0:
        assert "after finishing its work" in caplog.text


# ------------------------------------------------------------------------------ bad input
def test_missing_dataset_prefix(tmp_path):
    with pytest.raises(DataprepError, match=r"nothere.*no .*nothere\.bin.*build-index"):
        train(gpt_config(str(tmp_path / "nothere"), tmp_path))


def test_bin_suffix_given_as_prefix_gets_a_hint(gpt_prefix, tmp_path):
    with pytest.raises(DataprepError, match="without .bin/.idx"):
        train(gpt_config(gpt_prefix + ".bin", tmp_path))


def test_dataset_too_small_for_one_sample(tmp_path):
    prefix = write_dataset(tmp_path / "small", [np.arange(2, 20)], vocab_size=VOCAB)
    with pytest.raises(DataprepError, match="small.*seq.length"):
        train(gpt_config(prefix, tmp_path, seq_length=64, split="100,0,0"))


def test_model_config_vocab_not_matching_the_dataset(gpt_prefix, tmp_path):
    model = tmp_path / "m.toml"
    model.write_text('model = "gpt"\nn_layer = 1\nn_head = 2\nn_embd = 32\nvocab_size = 50257\n')
    with pytest.raises(DataprepError, match=r"vocab_size 50257 but .*tokenizer has 1000 ids"):
        train(gpt_config(gpt_prefix, tmp_path, model=str(model)))


def test_data_ids_beyond_the_tokenizer_vocab(tmp_path):
    prefix = write_dataset(tmp_path / "d", markov_docs(20, vocab=VOCAB, seed=1), vocab_size=500)
    with pytest.raises(DataprepError, match=r"token id 9\d\d, .*only 500 ids"):
        train(gpt_config(prefix, tmp_path))
    # a manifest without max_token_id: the first batch holding such an id stops the run
    manifest = Path(prefix + ".json")
    m = json.loads(manifest.read_text())
    del m["max_token_id"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(DataprepError, match=r"holds token id 9\d\d but the model's vocab.* 500"):
        train(gpt_config(prefix, tmp_path))


def test_tp_not_dividing_heads_is_caught_before_starting_ranks(gpt_prefix, tmp_path):
    model = tmp_path / "m.json"
    model.write_text(json.dumps({"model": "gpt", "n_layer": 1, "n_head": 3, "n_embd": 48}))
    with pytest.raises(UsageError, match="tensor_model_parallel_size 2 does not divide.*n_head=3"):
        run(gpt_config(gpt_prefix, tmp_path, model=str(model), tensor_model_parallel_size=2))


def test_world_size_not_divisible_by_tp(gpt_prefix, tmp_path):
    with pytest.raises(UsageError, match="world size 3 is not divisible by .*size 2"):
        run(gpt_config(gpt_prefix, tmp_path, tensor_model_parallel_size=2, nproc_per_node=3))


def test_checkpoint_of_another_architecture(gpt_prefix, tmp_path):
    ckpt = tmp_path / "ckpt"
    train(gpt_config(gpt_prefix, tmp_path, train_iters=2, save=str(ckpt)))
    model = tmp_path / "m.json"
    model.write_text(json.dumps({"preset": "gpt-tiny", "n_layer": 3}))
    with pytest.raises(DataprepError, match=r"gpt config differs.*n_layer=2 \(now 3\)"):
        train(gpt_config(gpt_prefix, tmp_path, model=str(model), load=str(ckpt), train_iters=4))


def test_checkpoint_of_gpt_loaded_as_mt5(gpt_prefix, mt5_prefix, tmp_path):
    ckpt = tmp_path / "ckpt"
    train(gpt_config(gpt_prefix, tmp_path, train_iters=1, save=str(ckpt)))
    with pytest.raises(DataprepError, match="holds a GPT model but model mt5-tiny is MT5"):
        train(mt5_config(mt5_prefix, tmp_path, load=str(ckpt)))


def test_unknown_model_and_seq_length_too_long(gpt_prefix, tmp_path):
    with pytest.raises(UsageError, match="neither a preset"):
        train(gpt_config(gpt_prefix, tmp_path, model="gpt-huge"))
    with pytest.raises(UsageError, match="exceeds the model's block_size 256"):
        train(gpt_config(gpt_prefix, tmp_path, seq_length=512))


def test_main_prints_one_line_errors(gpt_prefix, tmp_path):
    # `python -m trainer.train` is `dataprep train`, so its error line is the command's
    out = subprocess.run(
        [sys.executable, "-m", "trainer.train", "--data-path", str(tmp_path / "missing"),
         "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2  # a flag naming nothing is a usage error (README: exit codes)
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dataprep train: error:") and "missing" in err[0]


def test_dataprep_train_command(gpt_prefix, tmp_path, capsys):
    from dataprep.cli import main as cli_main

    metrics = tmp_path / "m.jsonl"
    code = cli_main(
        [
            "train",
            "--data-path",
            gpt_prefix,
            "--model",
            "gpt-tiny",
            "--seq-length",
            "16",
            "--micro-batch-size",
            "2",
            "--train-iters",
            "3",
            "--num-threads",
            "1",
            "--metrics",
            str(metrics),
            "--no-progress",
        ]
    )
    assert code == 0
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in read_metrics(metrics))


def test_python_dash_m_trainer_help():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "trainer.train", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for flag in (
        "--data-path",
        "--tensor-model-parallel-size",
        "--global-batch-size",
        "--load",
        "--exit-interval",
        "--metrics",
    ):
        assert flag in out.stdout, flag
    assert textwrap.dedent(out.stderr).strip() == ""


@pytest.mark.parametrize(
    ("extra", "code", "pattern"),
    [
        (["--data-path", "{prefix}.bin"], 2, "give the prefix without .bin/.idx"),
        (["--data-path", "{prefix}", "--load", "{tmp}/nonexistent"], 2, "no such directory"),
        (
            ["--data-path", "{prefix}", "--global-batch-size", "12", "--micro-batch-size", "8"],
            2,
            "not a multiple of --micro-batch-size 8",
        ),
    ],
)
def test_a_bad_tp2_launch_prints_one_error_and_starts_no_rank(
    gpt_prefix, tmp_path, capfd, extra, code, pattern
):
    from dataprep.cli import main as cli_main

    argv = [a.format(prefix=gpt_prefix, tmp=tmp_path) for a in extra]
    assert (
        cli_main(["train", *argv, "--tensor-model-parallel-size", "2", "--seq-length", "32"])
        == code
    )
    out, err = capfd.readouterr()
    lines = [x for x in (out + err).splitlines() if x.strip()]
    assert len(lines) == 1, lines  # no header, no bar, no per-rank copies, no launcher line
    assert lines[0].startswith("dataprep train: error:") and pattern in lines[0], lines[0]


def test_no_bar_frames_in_a_log_file_and_the_outputs_are_named(gpt_prefix, tmp_path, capfd, caplog):
    cfg = gpt_config(gpt_prefix, tmp_path, train_iters=3, progress=True, log_interval=1,
                     save=str(tmp_path / "ckpt"))  # fmt: skip
    with caplog.at_level("INFO"):
        train(cfg)  # stderr is captured, not a terminal: periodic lines instead of a tqdm bar
    err = capfd.readouterr().err
    assert "\r" not in err and "step/s" not in err
    assert "step 3/3" in caplog.text
    assert f"metrics {cfg.metrics}" in caplog.text
    assert str(tmp_path / "metrics.png") in caplog.text and str(tmp_path / "ckpt") in caplog.text
