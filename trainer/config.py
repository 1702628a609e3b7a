"""`TrainConfig` and its Megatron-named flags, and the model config they resolve to.

`add_arguments` is shared by `python -m trainer.train` and `dataprep train`; `config_from_args`
turns the parsed flags into a `TrainConfig` at once. `resolve_model_config` turns `--model` (a
preset or a .json/.toml file), the dataset's vocabulary and the dropout flags into a `GPTConfig` /
`MT5Config`; `check_tp_layout` says which model dimension a TP size does not divide.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError, UsageError

log = logging.getLogger("trainer.config")

DEFAULT_MODEL = "gpt-tiny"  # --model when neither it nor a --load checkpoint says otherwise


@dataclass(frozen=True, slots=True)
class TrainConfig:
    data_path: tuple[str, ...] = ()  # one prefix, or "w1 p1 w2 p2 ..."; () only with dry_run
    model: str | None = None  # preset or .json/.toml file; None = gpt-tiny, or --load's model
    split: str = "969,30,1"  # train/valid/test weights over sequences (GPT) or documents (T5)
    seq_length: int | None = None  # GPT tokens per sample; None = the model's block_size
    encoder_seq_length: int = 512  # mT5 encoder input ids per sample (incl. sentinels and EOS)
    decoder_seq_length: int | None = None  # mT5 labels per sample; None = T5's targets length
    micro_batch_size: int = 4  # samples per forward/backward on one DP rank
    global_batch_size: int | None = (
        None  # samples per optimizer step; None = micro x DP (no accumulation)
    )
    tensor_model_parallel_size: int = 1
    make_vocab_size_divisible_by: int = 128  # embedding rows padded to a multiple of this x TP
    train_iters: int = 100  # optimizer steps of the whole run (also the LR schedule length)
    lr: float = 3e-4  # peak learning rate
    min_lr: float = 0.0  # end of the cosine decay
    lr_warmup_iters: int = 0  # linear warmup from 0 to lr over these steps
    lr_decay_iters: int | None = None  # cosine decay ends here; None = train_iters
    weight_decay: float = 0.01  # AdamW, on matrices only (not biases, norms)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0  # max global gradient norm; 0 = no clipping
    bf16: bool = False  # bf16 autocast of the forward; fp32 master weights, grads and reduction
    recompute_granularity: str | None = None  # "full" (each block) | "selective" (core attention)
    sequence_parallel: bool = False  # TP >= 2: norms/dropout/residuals sharded along the sequence
    use_distributed_optimizer: bool = False  # DP >= 2: AdamW states sharded over DP (ZeRO-1)
    eod_mask_loss: bool = False  # GPT: no loss on the target after an EOD input (Megatron's flag)
    reset_position_ids: bool = False  # GPT: positions restart after each EOD
    reset_attention_mask: bool = False  # GPT: no attention across documents of a window
    hidden_dropout: float | None = None  # None = the model config's value
    attention_dropout: float | None = (
        None  # None = the model config's value (GPT only; mT5 has one rate)
    )
    seed: int = 1234
    save: str | None = None  # checkpoint directory
    save_interval: int | None = None  # save every N steps (and at the end) when --save is given
    exit_interval: int | None = None  # stop (after saving) when the step is a multiple of N
    load: str | None = None  # resume from this checkpoint directory (if it holds one)
    metrics: str | None = None  # JSONL file: one object per step
    loss_curve: str | None = None  # PNG; None = the metrics path with .png
    data_cache_path: str | None = None  # GPT index cache directory (Megatron --data-cache-path)
    tokenizer: str | None = None  # tokenizer spec; None = the one in the dataset's manifest
    noise_density: float = 0.15  # T5 span corruption
    mean_noise_span_length: float = 3.0
    nproc_per_node: int | None = None  # local ranks to start; None = TP size (1 under torchrun)
    distributed_timeout_minutes: float = (
        10.0  # a collective waiting longer fails instead of hanging
    )
    log_interval: int = 10  # log a line every N steps when there is no progress bar
    progress: bool = True  # tqdm bar on rank 0
    num_threads: int | None = None  # torch threads per rank; None = CPUs / local ranks
    extra: dict = field(default_factory=dict)  # free-form notes copied into the checkpoint
    dry_run: bool = False  # print the per-rank memory estimate (trainer/memory.py) and stop
    gpu_memory: float = 80.0  # GiB per rank the dry run's verdict compares the estimate with

    def __post_init__(self) -> None:
        if isinstance(self.data_path, str):
            object.__setattr__(self, "data_path", tuple(self.data_path.split()))
        object.__setattr__(self, "data_path", tuple(self.data_path))
        if not self.data_path and not self.dry_run:
            raise UsageError(
                "--data-path is required (except with --dry-run): a dataset prefix or "
                "'w1 p1 w2 p2 ...'"
            )
        if not self.gpu_memory > 0:
            raise UsageError(f"--gpu-memory must be > 0 (GiB), got {self.gpu_memory}")
        positive = [
            "micro_batch_size",
            "tensor_model_parallel_size",
            "train_iters",
            "encoder_seq_length",
            "make_vocab_size_divisible_by",
            "log_interval",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        for name in (
            "seq_length",
            "decoder_seq_length",
            "global_batch_size",
            "save_interval",
            "exit_interval",
            "nproc_per_node",
            "lr_decay_iters",
            "num_threads",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.lr < 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise UsageError(
                f"need 0 <= --min-lr <= --lr, got --lr {self.lr} --min-lr {self.min_lr}"
            )
        if self.lr_warmup_iters < 0:
            raise UsageError(f"--lr-warmup-iters must be >= 0, got {self.lr_warmup_iters}")
        if self.clip_grad < 0:
            raise UsageError(f"--clip-grad must be >= 0, got {self.clip_grad}")
        for name in ("hidden_dropout", "attention_dropout"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.distributed_timeout_minutes <= 0:
            raise UsageError("--distributed-timeout-minutes must be > 0")
        if self.recompute_granularity not in (None, "full", "selective"):
            raise UsageError(
                "--recompute-granularity must be full or selective, got "
                f"{self.recompute_granularity!r}"
            )
        if self.sequence_parallel and self.tensor_model_parallel_size < 2:
            raise UsageError(
                "--sequence-parallel shards along the sequence across the TP ranks: it needs "
                "--tensor-model-parallel-size 2 or more"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


# ------------------------------------------------------------------------------------------ flags
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Megatron-named flags; shared by `python -m trainer.train` and `dataprep train`."""
    d = TrainConfig.__dataclass_fields__
    g = p.add_argument_group("data")
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
        default=d["split"].default,
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

    g = p.add_argument_group("model and parallelism")
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

    g = p.add_argument_group("optimization")
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

    g = p.add_argument_group("memory (Megatron's flags)")
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

    g = p.add_argument_group("checkpoints and output")
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def _read_model_file(path: Path) -> dict:
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text(encoding="utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {path}: cannot read the model config: {e}") from e


def resolve_model_config(config: TrainConfig, *, vocab_size: int | None) -> tuple[str, Any]:
    """(task, model config) from --model, the data's vocabulary and the dropout flags; the task is
    "gpt" (GPT, GPT-J: causal LM on GPT windows) or "mt5" (span corruption).

    A preset takes the dataset's vocabulary; a config file naming `vocab_size` must agree with it.
    """
    from trainer.models import ARCHITECTURES, all_presets, architecture_of, architecture_of_preset
    from trainer.models.common import pad_vocab_size

    spec = config.model or DEFAULT_MODEL
    fields: dict[str, Any]
    arch = architecture_of_preset(spec)
    from_file = arch is None
    if arch is not None:
        fields = dict(arch.presets[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"--model {spec!r} is neither a preset ({', '.join(all_presets())}) "
                "nor an existing .json/.toml config file"
            )
        fields = dict(_read_model_file(path))
        preset = fields.pop("preset", None)
        name = fields.pop("model", None) or fields.pop("type", None)
        if preset is not None:
            preset_arch = architecture_of_preset(preset)
            if preset_arch is None:
                raise UsageError(f"--model {path}: unknown preset {preset!r}")
            name = name or preset_arch.name
            fields = {**preset_arch.presets[preset], **fields}
        try:
            arch = architecture_of(str(name)) if name is not None else None
        except DataprepError:
            arch = None
        if arch is None:
            raise UsageError(
                f'--model {path}: set "model" to one of {sorted(ARCHITECTURES)} (or "preset"), '
                f"got {name!r}"
            )
    cls = arch.config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UsageError(
            f"--model {spec}: unknown {cls.__name__} fields {unknown}; known: {sorted(known)}"
        )
    if vocab_size is not None:
        if from_file and "vocab_size" in fields and int(fields["vocab_size"]) != vocab_size:
            raise DataprepError(
                f"--model {spec} has vocab_size {fields['vocab_size']} but the dataset's "
                f"tokenizer has "
                f"{vocab_size} ids: use a model config for this tokenizer or the matching dataset"
            )
        fields["vocab_size"] = vocab_size
    one_rate = "dropout_rate" in known  # mT5 (HF dropout_rate) has a single dropout
    if config.hidden_dropout is not None:
        fields["dropout_rate" if one_rate else "dropout"] = config.hidden_dropout
    if config.attention_dropout is not None:
        if not one_rate:
            fields["attn_dropout"] = config.attention_dropout
        elif config.hidden_dropout is None or config.attention_dropout != config.hidden_dropout:
            log.warning(
                "mT5 has one dropout rate (HF dropout_rate); --attention-dropout is ignored"
            )
    if not fields.get("padded_vocab_size"):
        fields["padded_vocab_size"] = pad_vocab_size(
            fields.get("vocab_size", cls.__dataclass_fields__["vocab_size"].default),
            config.tensor_model_parallel_size,
            config.make_vocab_size_divisible_by,
        )
    return arch.task, cls(**fields)


def check_tp_layout(kind: str, mc: Any, tp: int) -> None:
    """TP must divide the attention heads, the FFN width and the padded vocabulary."""
    bad = {k: v for k, v in mc.tp_dims().items() if v % tp}
    if bad:
        what = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise UsageError(
            f"--tensor-model-parallel-size {tp} does not divide the model's {what}: "
            f"pick a TP size that divides them (or another --model)"
        )
