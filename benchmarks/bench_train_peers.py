"""Training throughput beside the simplest trainers of the field, measured side by side in one run.

    python benchmarks/bench_train_peers.py --nanogpt PATH/TO/nanoGPT/model.py [--rounds 3]

The same GPT-2 model (4 layers, d 256, 4 heads, 50257 ids padded to 50304, seq 256, micro batch
8, AdamW lr 1e-4, fp32, dropout 0, gradient clipping at 1) on the same synthetic GPT-2-vocabulary
data, steady-state steps only:

- ours, TP=1: `dataprep train`'s loop in this process, 2 torch threads;
- ours, TP=2: two local ranks with 1 thread each (the same loop, tensor-parallel over gloo);
- nanoGPT: karpathy/nanoGPT's `model.py`, read from the path given (not vendored), driven by the
  plain loop of its train.py (forward with targets, backward, clip, AdamW step), 2 threads;
- HF: transformers' `GPT2LMHeadModel` with `labels`, the same plain loop, 2 threads.

Rounds interleave the four so each sees the same machine load; the table gives medians of
tokens/s and the ratios to nanoGPT and HF. The machine is shared and noisy: the ratios, measured
in one run, are the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import write_dataset  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=256)
SEQ, MICRO, WARMUP = 256, 8, 2


def _batches(prefix: str, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from dataprep.indexed import IndexedDatasetReader

    r = IndexedDatasetReader(prefix)
    flat = np.concatenate([np.asarray(r[i]) for i in range(len(r))]).astype(np.int64)
    out = []
    for s in range(steps):
        rows = [flat[(s * MICRO + b) * SEQ : (s * MICRO + b) * SEQ + SEQ + 1] for b in range(MICRO)]
        w = torch.from_numpy(np.stack(rows))
        out.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))
    return out


def _plain_loop(model, batches, loss_of) -> float:
    """tokens/s of nanoGPT's train.py loop over steady-state steps."""
    torch.set_num_threads(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    times = []
    for x, y in batches:
        t0 = time.perf_counter()
        loss = loss_of(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return MICRO * SEQ / statistics.median(times[WARMUP:])


def nanogpt(path: str, batches) -> float:
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(block_size=SEQ, vocab_size=50304, dropout=0.0, bias=True,
                                        **SHAPE))  # fmt: skip
    return _plain_loop(model, batches, lambda m, x, y: m(x, y)[1])


def hf(batches) -> float:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50304, n_positions=SEQ, n_layer=SHAPE["n_layer"],
                                  n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"], resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg)
    model.config._attn_implementation = "sdpa"
    return _plain_loop(model, batches, lambda m, x, y: m(input_ids=x, labels=x).loss)


def ours(prefix: str, model_json: Path, tmp: Path, steps: int, tp: int) -> float:
    from trainer.train import TrainConfig, run, train
    from trainer.training.metrics import read_metrics

    metrics = tmp / f"ours-tp{tp}-{time.monotonic_ns()}.jsonl"
    cfg = TrainConfig(data_path=(prefix,), model=str(model_json), seq_length=SEQ,
                      micro_batch_size=MICRO, train_iters=steps, lr=1e-4, min_lr=1e-4,
                      hidden_dropout=0.0, attention_dropout=0.0, tensor_model_parallel_size=tp,
                      num_threads=2 if tp == 1 else 1, progress=False,
                      metrics=str(metrics))  # fmt: skip
    if tp == 1:
        train(cfg)
    elif run(cfg) != 0:
        raise SystemExit("the TP=2 run failed")
    recs = [r for r in read_metrics(metrics) if "loss" in r][WARMUP:]
    return statistics.median(r["tokens_per_s"] for r in recs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", required=True, help="path of karpathy/nanoGPT's model.py")
    p.add_argument("--steps", type=int, default=8, help="steps per run, 2 of them warm-up (8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median (3)")
    args = p.parse_args(argv)
    if not Path(args.nanogpt).is_file():
        raise SystemExit(f"--nanogpt {args.nanogpt}: no such file (fetch karpathy/nanoGPT)")
    results: dict[str, list[float]] = {k: [] for k in ("ours TP=1", "ours TP=2", "nanoGPT", "HF")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prefix = write_dataset(tmp / "gpt", vocab=50257, num_tokens=SEQ * MICRO * args.steps * 2,
                               spec="gpt2", eos=50256)  # fmt: skip
        model_json = tmp / "gpt-4x256.json"
        model_json.write_text(json.dumps({"preset": "gpt-tiny", **SHAPE, "block_size": SEQ}))
        batches = _batches(prefix, args.steps)
        for _ in range(args.rounds):
            results["ours TP=1"].append(ours(prefix, model_json, tmp, args.steps, 1))
            results["nanoGPT"].append(nanogpt(args.nanogpt, batches))
            results["HF"].append(hf(batches))
            results["ours TP=2"].append(ours(prefix, model_json, tmp, args.steps, 2))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"GPT 4 x 256, 4 heads, seq {SEQ}, micro batch {MICRO}, fp32, medians of "
          f"{args.rounds} interleaved rounds of {args.steps} steps ({WARMUP} warm-up)")  # fmt: skip
    print("| trainer | tokens/s | ÷ nanoGPT | ÷ HF | ÷ ours TP=1 |")
    print("| --- | --- | --- | --- | --- |")
    for name, v in med.items():
        print(f"| {name} | {v:,.0f} | {v / med['nanoGPT']:.2f} | {v / med['HF']:.2f} | "
              f"{v / med['ours TP=1']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
