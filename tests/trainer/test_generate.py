"""`dataprep generate` against transformers: GPT (trained at TP=2) and GPT-J
checkpoints on the toy Pile with the real GPT-2 BPE; greedy tokens equal `generate(do_sample=False)`
of the HF model holding our weights, logprobs its log-softmax; KV cache, batching, seeds, TP=2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dataprep.cli import main as cli_main
from trainer.checkpoint import load_config, merge_checkpoint, resolve_checkpoint
from trainer.inference.generate import SamplingParams, generate, generate_ids
from trainer.inference.loading import load_for_inference
from trainer.train import TrainConfig, run

transformers = pytest.importorskip("transformers")

TOY = Path(__file__).resolve().parents[2] / "pipelines" / "toy"
PROMPTS = ["The capital of France is", "def main():\n    return", "Hello"]
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("generate")
    inputs = [str(p) for p in sorted((TOY / "pile").glob("*.jsonl.zst"))]
    assert cli_main(["build-index", "--input", *inputs, "--output-prefix", str(d / "pile"),
                     "--tokenizer", "gpt2", "--append-eod", "--no-progress"]) == 0  # fmt: skip
    out = {}
    for model, tp in (("gpt-tiny", 2), ("gptj-tiny", 1)):
        # 2 steps: still close to the random init, so greedy decoding is varied (not one token)
        cfg = TrainConfig(data_path=(str(d / "pile_text_document"),), model=model, seq_length=32,
                          train_iters=2, micro_batch_size=2, lr=1e-3, num_threads=1,
                          tensor_model_parallel_size=tp, progress=False, save=str(d / model),
                          hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
        assert run(cfg) == 0
        out[model] = str(d / model)
    return out


def _hf(ckpt: str):
    from trainer.checkpoint.hf import build_hf_model

    path = resolve_checkpoint(ckpt)
    return build_hf_model(load_config(path), merge_checkpoint(path)[0])


@pytest.mark.parametrize("name", ["gpt-tiny", "gptj-tiny"])
def test_greedy_equals_transformers_generate_and_logprobs_its_log_softmax(checkpoints, name):
    model, tok, _ = load_for_inference(checkpoints[name])  # the TP=2 GPT loaded at TP=1
    hf = _hf(checkpoints[name])
    n = 24
    response, lengths = generate(model, tok, PROMPTS, SamplingParams(greedy=True,
                                 tokens_to_generate=n, end_strings=()))  # fmt: skip
    new_ids: set[int] = set()
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([tok.encode(prompt)])
        theirs = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n,
            eos_token_id=tok.eod_id,
            pad_token_id=tok.eod_id,
        )
        ours = response["token_ids"][i]
        assert ours == theirs[0, : len(ours)].tolist()
        assert len(ours) == len(theirs[0]) or ours[-1] == tok.eod_id
        new_ids.update(ours[lengths[i] :])
        with torch.no_grad():
            logits = hf(torch.tensor([ours])).logits[0, :-1, : tok.vocab_size].double()
        want = logits.log_softmax(-1).gather(-1, torch.tensor(ours[1:])[:, None]).squeeze(-1)
        got = torch.tensor(response["logprob"][i], dtype=torch.float64)
        assert got.shape == want.shape and (got <= 0).all()
        assert (got - want).abs().max().item() < 1e-4
        assert response["sentences"][i] == tok.decode(ours)
        assert response["tokens"][i] == [tok.id_to_piece(t) for t in ours]
        assert response["offsets"][i][0] == 0
        assert response["offsets"][i] == sorted(response["offsets"][i])
    assert "full_logprob" not in response
    assert len(new_ids) >= 3  # not a single repeated token


def test_kv_cache_and_batching_do_not_change_the_result(checkpoints):
    model, tok, _ = load_for_inference(checkpoints["gptj-tiny"])
    p = SamplingParams(greedy=True, tokens_to_generate=12, end_strings=())
    batch, _ = generate(model, tok, PROMPTS, p)
    nocache, _ = generate(model, tok, PROMPTS, SamplingParams(**{**_fields(p), "use_cache": False}))
    assert batch["token_ids"] == nocache["token_ids"]
    flat = [x for r in batch["logprob"] for x in r]
    flat2 = [x for r in nocache["logprob"] for x in r]
    assert max(abs(a - b) for a, b in zip(flat, flat2, strict=True)) < 1e-5
    for i, prompt in enumerate(PROMPTS):  # each row alone gives what it got in the batch
        alone, _ = generate(model, tok, [prompt], p)
        assert alone["token_ids"][0] == batch["token_ids"][i]


def _fields(p: SamplingParams) -> dict:
    return {k: getattr(p, k) for k in p.field_names()} | {"use_cache": p.use_cache}


def test_sampling_is_reproducible_with_a_seed_and_follows_the_filters(checkpoints):
    model, tok, _ = load_for_inference(checkpoints["gpt-tiny"])
    p = SamplingParams(tokens_to_generate=16, random_seed=5, top_k=50, temperature=1.5,
                       end_strings=())  # fmt: skip
    a, _ = generate(model, tok, PROMPTS, p)
    b, _ = generate(model, tok, PROMPTS, p)
    c, _ = generate(model, tok, PROMPTS, SamplingParams(**{**_fields(p), "random_seed": 6}))
    assert a == b and a["token_ids"] != c["token_ids"]
    # top_k = 1 (or a tiny top_p) samples the argmax: greedy
    greedy, _ = generate(model, tok, PROMPTS, SamplingParams(greedy=True, tokens_to_generate=16,
                                                             end_strings=()))  # fmt: skip
    for f in ({"top_k": 1}, {"top_p": 1e-6}):
        k1, _ = generate(model, tok, PROMPTS, SamplingParams(**{**_fields(p), **f}))
        assert k1["token_ids"] == greedy["token_ids"]
    full, _ = generate(model, tok, ["Hello"], SamplingParams(greedy=True, tokens_to_generate=3,
                                                             all_probs=True))  # fmt: skip
    dist = torch.tensor(full["full_logprob"][0])
    assert dist.shape == (len(full["token_ids"][0]) - 1, tok.vocab_size)
    assert torch.allclose(dist.exp().sum(-1), torch.ones(len(dist)), atol=1e-4)


def test_eod_ends_a_row_unless_min_tokens_and_padded_columns_are_never_sampled(checkpoints):
    model, tok, _ = load_for_inference(checkpoints["gptj-tiny"])  # GPT-J's head has a bias
    eod, V = tok.eod_id, tok.vocab_size
    prompt = [tok.encode("Hello")]
    with torch.no_grad():
        model.lm_head.bias[V:] = 1e4  # the zero padded rows, made the most likely by far
        p = SamplingParams(tokens_to_generate=20, temperature=100.0, top_p=1.0, random_seed=1)
        ids = generate_ids(model, prompt, p, eod_id=eod)[0][0]
        assert len(ids) == 21 and max(ids) < V
        model.lm_head.bias[eod] = 1e4  # now EOD is certain among the real ids
        ids = generate_ids(model, prompt, SamplingParams(greedy=True), eod_id=eod)[0][0]
        assert ids == prompt[0] + [eod]  # the row ends at its EOD, which is kept
        p = SamplingParams(greedy=True, tokens_to_generate=10, min_tokens_to_generate=4)
        ids = generate_ids(model, prompt, p, eod_id=eod)[0][0]
        assert len(ids) == 1 + 5 and eod not in ids[1:5] and ids[-1] == eod


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tokens_to_generate": 0}, "tokens_to_generate"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": 101.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"random_seed": -3}, "random_seed"),
    ],
)
def test_bad_parameters_name_the_field_and_the_range(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        SamplingParams(**kwargs)
    if field == "temperature":  # ignored when greedy, as NeMo
        SamplingParams(**{**kwargs, "greedy": True})


def test_cli_json_at_tp2_equals_tp1_and_errors_are_one_line(checkpoints, capfd):
    args = ["generate", checkpoints["gpt-tiny"], "--prompt", PROMPTS[0], "--prompt", PROMPTS[2],
            "--greedy", "--tokens-to-generate", "10", "--json"]  # fmt: skip
    assert cli_main(args) == 0
    one = json.loads(capfd.readouterr().out)
    assert cli_main([*args, "--nproc-per-node", "2"]) == 0
    (line,) = capfd.readouterr().out.strip().splitlines()  # rank 0 prints, the other rank not
    two = json.loads(line)
    assert one["token_ids"] == two["token_ids"] and one["sentences"] == two["sentences"]
    for a, b in zip(one["logprob"], two["logprob"], strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert set(one) == {"sentences", "tokens", "token_ids", "logprob", "offsets"}
    # the text form quotes each completion with JSON's escapes: whitespace-only ones are visible
    assert cli_main(args[:-1]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == f"[0] prompt: {json.dumps(PROMPTS[0], ensure_ascii=False)}"
    for i, line in zip((0, 1), lines[1::2], strict=True):
        completion = one["sentences"][i][len(PROMPTS[(0, 2)[i]]) :]
        assert line.endswith("): " + json.dumps(completion, ensure_ascii=False)), line
    assert cli_main(["generate", checkpoints["gpt-tiny"], "--prompt", "x", "--top-p", "2"]) == 2
    err = capfd.readouterr().err.strip()
    assert err == "dataprep generate: error: top_p must be in [0, 1], got 2.0"
    assert cli_main(["generate", checkpoints["gpt-tiny"]]) == 2
    assert "no prompt" in capfd.readouterr().err
    assert cli_main(["generate", checkpoints["gpt-tiny"], "--prompt", " x" * 300]) == 2
    assert "context is 256 tokens" in capfd.readouterr().err
    assert cli_main(["generate", checkpoints["gpt-tiny"], "--prompt", ""]) == 2
    err = capfd.readouterr().err.strip()
    assert err.endswith("an empty prompt has no token to start from; pass --add-BOS"), err


def test_torchrun_ranks_run_one_tp2_generation(checkpoints, capfd):
    """`torchrun --nproc-per-node 2 -m dataprep generate`: one answer (rank 0), the TP=1 tokens."""
    import os
    import subprocess
    import sys

    args = ["generate", checkpoints["gpt-tiny"], "--prompt", PROMPTS[0], "--greedy",
            "--tokens-to-generate", "8", "--json"]  # fmt: skip
    assert cli_main(args) == 0
    one = json.loads(capfd.readouterr().out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dataprep", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    assert json.loads(line)["token_ids"] == one["token_ids"]
