"""`dataprep train`: GPT or mT5 with tensor parallelism on .bin/.idx data (trainer/train.py)."""

from __future__ import annotations

import argparse

HELP = "train a GPT or mT5 model with tensor parallelism straight from .bin/.idx datasets"
DESCRIPTION = """\
Train GPT (GPT-2 architecture), GPT-J (rotary, parallel attention + MLP) or mT5 (HF architecture)
on Megatron indexed datasets, reading batches straight from the memory-mapped .bin/.idx files: GPT
windows as megatron-core's GPTDataset, canonical T5 span corruption for mT5. Flags keep Megatron's
names. --nproc-per-node N (default: the TP size) starts N local ranks like `torchrun --standalone`;
under torchrun the ranks join the launched group instead. World = TP x DP; gloo on CPU, NCCL on
GPU; fp32 on CPU, bf16 autocast on GPU. The model is the same at every TP size, so a run may move
between TP sizes at any checkpoint.

examples:
  dataprep train --data-path out/pile_text_document --model gpt-tiny --seq-length 128 \\
      --micro-batch-size 8 --train-iters 300 --lr 1e-3 --tensor-model-parallel-size 2 \\
      --metrics out/gpt.jsonl --save out/ckpt-gpt --save-interval 100
  dataprep train --data-path 0.7 out/mc4_en 0.3 out/mc4_ja --model mt5-tiny \\
      --encoder-seq-length 128 --tensor-model-parallel-size 2 --train-iters 200 \\
      --load out/ckpt-mt5 --save out/ckpt-mt5
  dataprep import-hf my-gpt2-folder out/ckpt-imported
  dataprep train --data-path out/pile_text_document --load out/ckpt-imported --save out/ckpt-ft
  torchrun --nproc-per-node 4 -m trainer.train --data-path out/pile_text_document \\
      --tensor-model-parallel-size 2 --global-batch-size 32      # TP 2 x DP 2
  dataprep train --model mt5-xl --tensor-model-parallel-size 2 --dry-run --gpu-memory 40

--dry-run starts no rank and needs no --data-path (given, only its manifest's vocabulary is read):
it prints the per-rank memory of the run (weights, gradients, AdamW states, one micro batch's
activations as this trainer keeps them, with --bf16, --recompute-granularity, --sequence-parallel
and --use-distributed-optimizer taken into account) and a one-line verdict against --gpu-memory GB
(default 80); it exits 0 when the run fits and 1 when it does not.

--metrics FILE writes one JSON object per step (step, loss, lr, tokens_per_s, grad_norm, ...) and a
loss-curve PNG beside it at the end. --save/--load checkpoints resume exactly (model, optimizer, LR
schedule, RNG states, data position) and may change the TP size between runs; without --model, a
--load checkpoint's own architecture is used."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from trainer.train import add_arguments as trainer_arguments

    trainer_arguments(p)


def run(args: argparse.Namespace) -> int:
    from trainer.launch import dist_env
    from trainer.train import config_from_args, configure_rank_logging
    from trainer.train import run as train_run

    if dist_env() is not None:  # a rank of `torchrun -m dataprep train`: tag lines, INFO on rank 0
        configure_rank_logging()
    return train_run(config_from_args(args))
