"""`dataprep fill-mask`: an mT5 checkpoint trained at TP=2 on the toy mC4 with the
mt5-toy SentencePiece; the same tokens as transformers' MT5ForConditionalGeneration.generate
(greedy) on our weights, logprobs <= 0 and equal to its log-softmax within 1e-4, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dataprep.cli import main as cli_main
from trainer.checkpoint import load_config, merge_checkpoint
from trainer.inference.fill_mask import fill_mask, masked_ids
from trainer.inference.loading import load_for_inference
from trainer.train import TrainConfig, run

transformers = pytest.importorskip("transformers")

TOY = Path(__file__).resolve().parents[2] / "pipelines" / "toy"
PROMPTS = ["La capitale de la France est <mask>.", "Die <mask> ist <mask> und 你好<mask>"]
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("fill_mask")
    assert cli_main(["build-index", "--input", str(TOY / "mc4"), "--output-prefix", str(d / "mc4"),
                     "--tokenizer", "mt5-toy", "--append-eod", "--no-progress",
                     "--languages", "de,ru,zh"]) == 0  # fmt: skip
    cfg = TrainConfig(data_path=(str(d / "mc4_text_document"),), model="mt5-tiny",
                      encoder_seq_length=64, train_iters=3, micro_batch_size=2, lr=1e-3,
                      num_threads=1, tensor_model_parallel_size=2, progress=False,
                      save=str(d / "ckpt"), hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
    assert run(cfg) == 0
    return str(d / "ckpt")


def test_tokens_equal_transformers_generate_and_logprobs_its_log_softmax(ckpt):
    from trainer.checkpoint.hf import build_hf_model

    model, tok, path = load_for_inference(ckpt)
    hf = build_hf_model(load_config(path), merge_checkpoint(path)[0])
    n = 12
    for prompt in PROMPTS:
        answer = fill_mask(model, tok, prompt, max_new_tokens=n)
        ids, _ = masked_ids(prompt, tok)
        assert ids[-1] == tok.eos_id and tok.sentinel_ids[0] in ids
        theirs = hf.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=n)[0]
        theirs = theirs[1:].tolist()  # without the decoder start
        if theirs and theirs[-1] == tok.eos_id:
            theirs = theirs[:-1]
        tokens = answer["completion"]["tokens"]
        assert [t for t, _, _ in tokens] == theirs
        assert all(piece == tok.id_to_piece(t) for t, piece, _ in tokens)
        dec = torch.tensor([[0] + theirs])
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([ids]), decoder_input_ids=dec).logits[0]
        want = logits[: len(theirs), : tok.vocab_size].double().log_softmax(-1)
        want = want.gather(-1, torch.tensor(theirs)[:, None]).squeeze(-1)
        got = torch.tensor([lp for _, _, lp in tokens], dtype=torch.float64)
        assert (got <= 0).all() and (got - want).abs().max().item() < 1e-4
        assert answer["masked_input"].split() == [tok.id_to_piece(i) for i in ids[:-1]]
        assert "<extra_id_0>" not in answer["completion"]["text"]


def test_cli_json_is_the_cards_object_and_errors_are_one_line(ckpt, capfd):
    assert cli_main(["fill-mask", ckpt, "--prompt", PROMPTS[0], "--json"]) == 0
    answer = json.loads(capfd.readouterr().out)
    assert set(answer) == {"prompt", "completion", "masked_input"}
    assert set(answer["completion"]) == {"text", "tokens"} and answer["prompt"] == PROMPTS[0]
    assert "<extra_id_0>" in answer["masked_input"]
    assert cli_main(["fill-mask", ckpt, "--prompt", "no marker here"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no <mask>" in err[0]
    assert cli_main(["fill-mask", ckpt, "--prompt", "<mask>" * 101]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "101 <mask> markers" in err[0] and "only 100 sentinels" in err[0]
    assert cli_main(["fill-mask", str(Path(ckpt) / "nope"), "--prompt", "<mask>"]) == 2
    assert "no such directory" in capfd.readouterr().err


def test_a_gpt_checkpoint_is_refused_by_name(tmp_path, capfd):
    """fill-mask on a GPT said '0 sentinels' (its tokenizer's); it says it needs an mT5."""
    from tests.trainer.trainer_fixtures import train_tiny_gpt

    gpt, _ = train_tiny_gpt(tmp_path, steps=1)
    capfd.readouterr()
    assert cli_main(["fill-mask", str(gpt), "--prompt", "a <mask> b"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [
        "dataprep fill-mask: error: fill-mask needs an mT5 checkpoint, this one holds a GPT; "
        "for GPT / GPT-J use `dataprep generate`"
    ]
