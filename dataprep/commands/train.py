"""`dataprep train`: GPT or mT5 with tensor parallelism on .bin/.idx data (trainer/train.py).

The flags are Megatron's names for the `TrainConfig` fields (trainer/config.py); `run` turns the
parsed flags into a `TrainConfig` at once. `python -m trainer.train` runs this same command."""

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
    """Megatron-named flags, one per `TrainConfig` field (same name with "-" for "_")."""
    _data_arguments(p.add_argument_group("data"))
    _parallelism_arguments(p.add_argument_group("model and parallelism"))
    _optimization_arguments(p.add_argument_group("optimization"))
    _memory_arguments(p.add_argument_group("memory (Megatron's flags)"))
    _output_arguments(p.add_argument_group("checkpoints and output"))


def _data_arguments(g: argparse._ArgumentGroup) -> None:
    """--data-path, the packed-data flags, split and lengths, span corruption, tokenizer."""
    g.add_argument(
        "--data-path",
        nargs="+",
        default=(),
        metavar="PATH",
        help="dataset prefix (without .bin/.idx), or weights and prefixes 'w1 p1 w2 p2 ...'; "
        "required, except with --dry-run (then only its manifest's vocabulary is read)",
    )
    for flag, what in (("--eod-mask-loss", "no loss on the target after an EOD input"),
                       ("--reset-position-ids", "positions restart after each EOD"),
                       ("--reset-attention-mask", "no attention across the documents of a "
                        "packed window")):  # fmt: skip
        g.add_argument(flag, action="store_true", help=f"GPT, Megatron's flag: {what}")
    g.add_argument(
        "--split",
        default="969,30,1",
        help="train,valid,test weights, e.g. 969,30,1 (default); training uses the first part",
    )
    g.add_argument(
        "--seq-length", type=int, help="GPT: tokens per sample (default: the model's block_size)"
    )
    g.add_argument(
        "--encoder-seq-length", type=int, default=512, help="mT5: encoder ids per sample (512)"
    )
    g.add_argument(
        "--decoder-seq-length",
        type=int,
        help="mT5: decoder ids per sample (default: T5's targets length, 114 for 512)",
    )
    g.add_argument("--noise-density", type=float, default=0.15, help="mT5 span corruption (0.15)")
    g.add_argument(
        "--mean-noise-span-length", type=float, default=3.0, help="mT5 span corruption (3.0)"
    )
    g.add_argument(
        "--data-cache-path",
        help="directory for GPT sample-index caches "
        "(default: <prefix>/cache/GPTDataset_indices as Megatron)",
    )
    g.add_argument(
        "--tokenizer", help="tokenizer spec (default: the one in the dataset's .json manifest)"
    )


def _parallelism_arguments(g: argparse._ArgumentGroup) -> None:
    """--model, TP, the vocabulary padding, dropout, local ranks and threads."""
    g.add_argument(
        "--model",
        help="preset (gpt-tiny, gpt-125m, gpt-350m, gpt-1.3b, gptj-tiny, gptj-125m, gptj-6b, "
        "mt5-tiny, mt5-small, mt5-base, mt5-xl) or a .json/.toml config: "
        '{"model": "gpt"|"gptj"|"mt5" or "preset": NAME, fields...}; default: the model of the '
        "--load checkpoint (e.g. one made by `dataprep import-hf`), else gpt-tiny",
    )
    g.add_argument("--tensor-model-parallel-size", type=int, default=1, help="TP size (default 1)")
    g.add_argument(
        "--make-vocab-size-divisible-by",
        type=int,
        default=128,
        help="store the embedding rows padded to a multiple of this x TP (default 128, as "
        "Megatron); the padded rows are zero and outside the loss, so the model is the same at "
        "every TP size",
    )
    g.add_argument(
        "--hidden-dropout", type=float, help="residual/embedding dropout (default: model's)"
    )
    g.add_argument("--attention-dropout", type=float, help="attention dropout (default: model's)")
    g.add_argument(
        "--nproc-per-node",
        type=int,
        help="start this many local ranks (default: the TP size; under torchrun: join it)",
    )
    g.add_argument(
        "--distributed-timeout-minutes",
        type=float,
        default=10.0,
        help="a collective that waits longer fails instead of hanging (default 10)",
    )
    g.add_argument("--num-threads", type=int, help="torch threads per rank (default: CPUs / ranks)")


def _optimization_arguments(g: argparse._ArgumentGroup) -> None:
    """Batch sizes, steps, the AdamW and LR-schedule settings, seed, bf16."""
    g.add_argument(
        "--micro-batch-size", type=int, default=4, help="samples per forward on one DP rank"
    )
    g.add_argument(
        "--global-batch-size",
        type=int,
        help="samples per step (default: micro x DP); a larger multiple accumulates gradients",
    )
    g.add_argument("--train-iters", type=int, default=100, help="optimizer steps (default 100)")
    g.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine decay floor (default 0)")
    g.add_argument("--lr-warmup-iters", type=int, default=0, help="linear warmup steps (default 0)")
    g.add_argument(
        "--lr-decay-iters", type=int, help="cosine decay length (default: --train-iters)"
    )
    g.add_argument(
        "--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)"
    )
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument(
        "--clip-grad", type=float, default=1.0, help="max gradient norm, 0 = off (default 1)"
    )
    g.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    g.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast of the forward (CPU and GPU); fp32 master weights, gradients, "
        "gradient all-reduce, optimizer and loss (Megatron's flag)",
    )


def _memory_arguments(g: argparse._ArgumentGroup) -> None:
    """Recompute, sequence parallelism, the distributed optimizer; --dry-run."""
    g.add_argument(
        "--recompute-granularity",
        choices=("full", "selective"),
        help="activation checkpointing: full = keep only each transformer block's input and "
        "recompute the block in the backward; selective = recompute only the core attention "
        "(softmax(QK^T) V). Same losses, less activation memory, about 1/3 more compute (full)",
    )
    g.add_argument(
        "--sequence-parallel",
        action="store_true",
        help="TP >= 2: the LayerNorms, dropouts and residual adds work on 1/TP of the sequence; "
        "all-gather / reduce-scatter along the sequence replace the all-reduces",
    )
    g.add_argument(
        "--use-distributed-optimizer",
        action="store_true",
        help="DP >= 2: each data-parallel rank keeps and updates only 1/DP of the AdamW states "
        "(ZeRO-1: gradients reduce-scattered, parameters all-gathered); checkpoints are the "
        "same as without and resume at any DP/TP",
    )

    g.add_argument(
        "--dry-run",
        action="store_true",
        help="start no rank and read no data (only the --data-path manifest's vocabulary, else "
        "the model's default): print the model, TP x DP (DP = --nproc-per-node / TP), lengths, "
        "flags, the parameter count and the per-rank bytes of weights, gradients, AdamW states "
        "and one micro batch's activations as this trainer keeps them, and whether they fit "
        "--gpu-memory. Exit 0 when they fit, 1 when they do not",
    )
    g.add_argument(
        "--gpu-memory",
        type=float,
        default=80.0,
        metavar="GB",
        help="memory per rank (GiB) the --dry-run verdict compares with (default 80)",
    )


def _output_arguments(g: argparse._ArgumentGroup) -> None:
    """Checkpoints, metrics, the loss curve and progress."""
    g.add_argument("--save", help="checkpoint directory")
    g.add_argument("--save-interval", type=int, help="save every N steps (always at the end)")
    g.add_argument(
        "--exit-interval", type=int, help="save and stop when the step is a multiple of N"
    )
    g.add_argument(
        "--load",
        help="resume from this checkpoint directory (exactly: model, optimizer, "
        "schedule, RNG, data position); may have been saved at another TP",
    )
    g.add_argument(
        "--metrics", metavar="FILE", help="write one JSON object per step to FILE (JSONL)"
    )
    g.add_argument(
        "--loss-curve", metavar="PNG", help="loss plot (default: the metrics file with .png)"
    )
    g.add_argument("--log-interval", type=int, default=10, help="log every N steps without a bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The `TrainConfig` of the parsed flags (each flag sets the field of the same name)."""
    import dataclasses

    from trainer.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    from trainer.launch import torchrun_rank
    from trainer.train import run as train_run

    config = config_from_args(args)
    torchrun_rank()  # a rank of `torchrun -m dataprep train`: tag lines, INFO on rank 0
    return train_run(config)
