"""The same run at TP=1, 2 and 4 with default flags: per-step losses side by side.

Builds the toy Pile (GPT-2 BPE, 50257 ids: default padding 50304 / 50432 / 50688 rows) and toy mC4
(mt5-toy, 8000 ids: 8064 / 8192 / 8192 rows) indices, trains gpt-tiny, gptj-tiny and mt5-tiny for
--steps steps with --seed 7 and dropout 0 at each TP size, and prints the largest per-step loss
difference from TP=1. Then resumes the TP=2 run's mid-way checkpoint at TP=1 and TP=4 and prints
the largest difference from the uninterrupted TP=2 run.

    python benchmarks/tp_invariance.py [--steps 10] [--out /tmp/tp_invariance]
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from dataprep.build import BuildConfig, build_index
from trainer.train import TrainConfig, run
from trainer.training.metrics import read_metrics

TOY = Path(__file__).resolve().parents[1] / "pipelines" / "toy"


def losses(cfg: TrainConfig) -> np.ndarray:
    assert run(cfg) == 0
    return np.array([r["loss"] for r in read_metrics(cfg.metrics)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="/tmp/tp_invariance")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    data = {}
    for name, inputs, tok in (("pile", TOY / "pile", "gpt2"), ("mc4", TOY / "mc4", "mt5-toy")):
        s = build_index(BuildConfig(inputs=(str(inputs),), output_prefix=str(out / name),
                                    tokenizer=tok, append_eod=True, progress=False))  # fmt: skip
        data[name] = s.outputs["text"]
    half = a.steps // 2
    print(f"{'model':10} {'TP=2 vs 1':>10} {'TP=4 vs 1':>10} {'resume@TP1':>11} {'resume@TP4':>11}")
    for model, prefix, lengths in (
        ("gpt-tiny", data["pile"], {"seq_length": 64}),
        ("gptj-tiny", data["pile"], {"seq_length": 64}),
        ("mt5-tiny", data["mc4"], {"encoder_seq_length": 128}),
    ):
        runs = {}
        for tp in (1, 2, 4):
            d = out / model / f"tp{tp}"
            runs[tp] = losses(TrainConfig(
                data_path=(prefix,), model=model, train_iters=a.steps, seed=7,
                hidden_dropout=0.0, attention_dropout=0.0, tensor_model_parallel_size=tp,
                micro_batch_size=4, progress=False, metrics=str(d / "m.jsonl"),
                save=str(d / "ckpt") if tp == 2 else None, save_interval=half, **lengths,
            ))  # fmt: skip
        resumed = {}
        for tp in (1, 4):
            d = out / model / f"resume{tp}"
            resumed[tp] = losses(TrainConfig(
                data_path=(prefix,), model=model, train_iters=a.steps, seed=7,
                hidden_dropout=0.0, attention_dropout=0.0, tensor_model_parallel_size=tp,
                micro_batch_size=4, progress=False, metrics=str(d / "m.jsonl"),
                load=str(out / model / "tp2" / "ckpt" / f"iter_{half:07d}"), **lengths,
            ))  # fmt: skip
        d2, d4 = (np.abs(runs[t] - runs[1]).max() for t in (2, 4))
        r1, r4 = (np.abs(resumed[t] - runs[2][half:]).max() for t in (1, 4))
        print(f"{model:10} {d2:10.1e} {d4:10.1e} {r1:11.1e} {r4:11.1e}   "
              f"(loss {runs[1][0]:.3f} -> {runs[1][-1]:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
