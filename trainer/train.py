"""The trainer: `TrainConfig`, Megatron-style flags, and the GPT/mT5 loop with tensor parallelism.

`main(argv)` parses flags into a `TrainConfig`; with `--nproc-per-node N` (default: the TP size
when not already under torchrun) it starts N local ranks like `torchrun --standalone`
(trainer/launch.py), each running `train(config)`. A rank joins world = TP x DP (TP groups of
consecutive ranks), builds the model from a preset or config file with the same seed on every rank,
shards it (trainer/parallel.py), and trains: AdamW, linear warmup then cosine decay to --min-lr,
TP-aware gradient clipping, gradient accumulation over micro-batches, fp32 on CPU and bf16 autocast
on GPU. The loss of a step is the mean over every target token of the global batch. Batches come
straight from the memory-mapped datasets (trainer/data.py); the data position is the step, so a
checkpoint (model, optimizer, step, RNG states of every rank) resumes exactly, and one saved at
TP=2 loads at TP=1 and back (trainer/checkpoint.py). Bad input (vocabulary, TP layout, world size,
checkpoint, dataset) fails at start-up on every rank."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError, UsageError

log = logging.getLogger("trainer.train")

KIND_ALIASES = {"gpt": "gpt", "gpt2": "gpt", "mt5": "mt5", "t5": "mt5"}  # --model file "model" key


@dataclass(frozen=True, slots=True)
class TrainConfig:
    data_path: tuple[str, ...]  # one prefix, or "w1 p1 w2 p2 ..." (Megatron --data-path)
    model: str = "gpt-tiny"  # preset name, or a .json/.toml model config file
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

    def __post_init__(self) -> None:
        if isinstance(self.data_path, str):
            object.__setattr__(self, "data_path", tuple(self.data_path.split()))
        object.__setattr__(self, "data_path", tuple(self.data_path))
        if not self.data_path:
            raise UsageError("--data-path is required: a dataset prefix or 'w1 p1 w2 p2 ...'")
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
        required=True,
        metavar="PATH",
        help="dataset prefix (without .bin/.idx), or weights and prefixes 'w1 p1 w2 p2 ...'",
    )
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
        default="gpt-tiny",
        help="preset (gpt-tiny, gpt-125m, gpt-350m, gpt-1.3b, mt5-tiny, mt5-small, mt5-base) "
        'or a .json/.toml config: {"model": "gpt"|"mt5" or "preset": NAME, fields...}',
    )
    g.add_argument("--tensor-model-parallel-size", type=int, default=1, help="TP size (default 1)")
    g.add_argument(
        "--make-vocab-size-divisible-by",
        type=int,
        default=128,
        help="pad the embedding rows to a multiple of this x TP (default 128, as Megatron)",
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


# ------------------------------------------------------------------------------------- entry points
def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and train (starting local ranks if asked); an exit code."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(config_from_args(args))
    except DataprepError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return e.exit_code


def run(config: TrainConfig) -> int:
    """Train with `config` in this process, or in `nproc_per_node` local ranks it starts."""
    from trainer.launch import dist_env, launch_local

    nproc = config.nproc_per_node
    if nproc is None:
        nproc = 1 if dist_env() is not None else config.tensor_model_parallel_size
    if nproc > 1 and dist_env() is None:
        from trainer.launch import check_world

        check_world(nproc, config.tensor_model_parallel_size)
        return launch_local(
            nproc,
            "trainer.train:worker_main",
            config.to_json(),
            threads_per_rank=config.num_threads,
            check=lambda: _validate_before_launch(config, nproc),
        )
    train(config)
    return 0


def worker_main() -> int:
    """Entry point of a rank started by `launch_local`: the config comes from the environment."""
    from trainer.launch import PAYLOAD_ENV

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    try:
        train(TrainConfig.from_json(os.environ[PAYLOAD_ENV]))
    except DataprepError as e:
        print(f"train: error [rank {rank}]: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


def _validate_before_launch(config: TrainConfig, nproc: int) -> None:
    """Catch what every rank would reject before starting them (the ranks check again)."""
    from trainer.launch import check_world

    check_world(nproc, config.tensor_model_parallel_size)
    info = inspect_data(config)
    kind, model_config = resolve_model_config(config, vocab_size=info.vocab_size)
    check_tp_layout(kind, model_config, config.tensor_model_parallel_size)
    _check_lengths(config, kind, model_config)


# ------------------------------------------------------------------------------------- model config
def _read_model_file(path: Path) -> dict:
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text(encoding="utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {path}: cannot read the model config: {e}") from e


def resolve_model_config(config: TrainConfig, *, vocab_size: int | None) -> tuple[str, Any]:
    """(kind, GPTConfig | MT5Config) from --model, the data's vocabulary and the dropout flags.

    A preset takes the dataset's vocabulary; a config file naming `vocab_size` must agree with it.
    """
    from trainer.models import GPT_PRESETS, MT5_PRESETS, GPTConfig, MT5Config, pad_vocab_size

    spec = config.model
    fields: dict[str, Any]
    if spec in GPT_PRESETS or spec in MT5_PRESETS:
        kind = "gpt" if spec in GPT_PRESETS else "mt5"
        fields = dict((GPT_PRESETS if kind == "gpt" else MT5_PRESETS)[spec])
        from_file = False
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"--model {spec!r} is neither a preset "
                f"({', '.join(sorted(GPT_PRESETS) + sorted(MT5_PRESETS))}) "
                "nor an existing .json/.toml config file"
            )
        raw = _read_model_file(path)
        fields = dict(raw)
        preset = fields.pop("preset", None)
        kind = fields.pop("model", None) or fields.pop("type", None)
        if preset is not None:
            if preset not in GPT_PRESETS and preset not in MT5_PRESETS:
                raise UsageError(f"--model {path}: unknown preset {preset!r}")
            kind = kind or ("gpt" if preset in GPT_PRESETS else "mt5")
            fields = {**(GPT_PRESETS if kind == "gpt" else MT5_PRESETS)[preset], **fields}
        if kind not in KIND_ALIASES:
            raise UsageError(
                f'--model {path}: set "model": "gpt" or "mt5" (or "preset"), got {kind!r}'
            )
        kind = KIND_ALIASES[kind]
        from_file = True
    cls = GPTConfig if kind == "gpt" else MT5Config
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
    if config.hidden_dropout is not None:
        fields["dropout" if kind == "gpt" else "dropout_rate"] = config.hidden_dropout
    if config.attention_dropout is not None:
        if kind == "gpt":
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
    return kind, cls(**fields)


def check_tp_layout(kind: str, mc: Any, tp: int) -> None:
    """TP must divide the attention heads, the FFN width and the padded vocabulary."""
    if kind == "gpt":
        dims = {"n_head": mc.n_head, "FFN width 4*n_embd": 4 * mc.n_embd}
    else:
        dims = {"num_heads": mc.num_heads, "d_ff": mc.d_ff}
    dims["padded_vocab_size"] = mc.padded_vocab_size
    bad = {k: v for k, v in dims.items() if v % tp}
    if bad:
        what = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise UsageError(
            f"--tensor-model-parallel-size {tp} does not divide the model's {what}: "
            f"pick a TP size that divides them (or another --model)"
        )


# -------------------------------------------------------------------------------------- data checks
@dataclass(frozen=True, slots=True)
class DataInfo:
    prefixes: tuple[str, ...]
    vocab_size: int | None  # tokenizer vocabulary from the manifest (or --tokenizer)
    max_token_id: int | None  # largest id in the data, when a manifest records it
    tokenizer_spec: str | None
    tokens: int | None


def inspect_data(config: TrainConfig) -> DataInfo:
    """Check the prefixes exist and agree on one tokenizer; read vocab facts from the manifests."""
    from dataprep.manifest import load_manifest
    from trainer.data import parse_data_path

    prefixes = tuple(p for _, p in parse_data_path(config.data_path))
    vocab, spec, max_id, tokens = set(), set(), [], 0
    for prefix in prefixes:
        missing = [s for s in (".bin", ".idx") if not os.path.isfile(prefix + s)]
        if missing:
            hint = (
                " (give the prefix without .bin/.idx)" if prefix.endswith((".bin", ".idx")) else ""
            )
            raise DataprepError(
                f"--data-path {prefix}: no {prefix}{' or '.join(missing)}{hint}; "
                "build it with `dataprep build-index`"
            )
        m = load_manifest(prefix)
        if m is None:
            continue
        tok = m.get("tokenizer") or {}
        if tok.get("vocab_size") is not None:
            vocab.add(int(tok["vocab_size"]))
        if tok.get("spec"):
            spec.add(tok["spec"])
        if m.get("max_token_id") is not None:
            max_id.append(int(m["max_token_id"]))
        tokens += int(m.get("tokens") or 0)
    if len(vocab) > 1 or len(spec) > 1:
        raise DataprepError(
            f"--data-path datasets were built with different tokenizers "
            f"({sorted(spec)}, vocab sizes {sorted(vocab)}): blend only one tokenizer's data"
        )
    tok_spec = config.tokenizer or (spec.pop() if spec else None)
    vocab_size = vocab.pop() if vocab else None
    if config.tokenizer is not None:
        from dataprep.tokenizers import load_tokenizer

        t = load_tokenizer(config.tokenizer)
        if vocab_size is not None and vocab_size != t.vocab_size:
            raise DataprepError(
                f"--tokenizer {config.tokenizer} has {t.vocab_size} ids but the dataset "
                f"was built with a {vocab_size}-id tokenizer"
            )
        vocab_size = t.vocab_size
    max_token_id = max(max_id) if max_id else None
    if vocab_size is not None and max_token_id is not None and max_token_id >= vocab_size:
        raise DataprepError(
            f"--data-path holds token id {max_token_id}, but the tokenizer has only "
            f"{vocab_size} ids: the manifest and the data disagree; rebuild the dataset"
        )
    return DataInfo(prefixes, vocab_size, max_token_id, tok_spec, tokens or None)


# ----------------------------------------------------------------------------------------- schedule
def lr_at(step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """LR of 0-based step `step`: lr*(step+1)/warmup during warmup, then cosine from lr to min_lr.

    E.g. lr 1e-3, min 1e-4, warmup 10, decay 110: step 0 -> 1e-4, step 9 -> 1e-3, step 60 -> 5.5e-4,
    step >= 110 -> 1e-4.
    """
    if warmup_iters > 0 and step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    span = max(1, decay_iters - warmup_iters)
    progress = min(1.0, max(0.0, (step - warmup_iters) / span))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------ RNG
def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    import numpy as np
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    kind: str
    start_step: int  # steps done before this run (resume point)
    end_step: int  # steps done at the end
    losses: list[float] = field(
        default_factory=list
    )  # per step of this run (rank 0's view = global)
    tokens_per_s: float = 0.0  # median over this run's steps after the first
    data_wait_share: float = 0.0  # time waiting for data / loop time
    seconds: float = 0.0
    metrics_path: str | None = None
    loss_curve_path: str | None = None


def train(config: TrainConfig) -> TrainResult:
    """Train on this rank (joining the launched group when there is one); raises DataprepError."""
    import numpy as np
    import torch

    from trainer import parallel
    from trainer.data import BatchLoader
    from trainer.launch import check_world, dist_env, setup_distributed, teardown_distributed
    from trainer.models import build_model

    tp = config.tensor_model_parallel_size
    env = dist_env()
    check_world(env.world_size if env else 1, tp)
    # every check that needs no other rank, before any collective
    info = inspect_data(config)
    kind, model_config = resolve_model_config(config, vocab_size=info.vocab_size)
    check_tp_layout(kind, model_config, tp)
    if info.vocab_size is None:
        log.warning(
            "the dataset has no manifest naming its tokenizer; trusting the model's vocab_size %d",
            model_config.vocab_size,
        )
    if info.max_token_id is not None and info.max_token_id >= model_config.vocab_size:
        raise DataprepError(
            f"--data-path holds token id {info.max_token_id} but the model's vocabulary "
            f"is {model_config.vocab_size}: use a model for this tokenizer"
        )
    seq_length = _check_lengths(config, kind, model_config)
    resume = _find_checkpoint(config.load)
    if resume is not None:
        model_config = _checkpoint_model_config(resume, kind, model_config, config)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    elif env is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, env.local_world_size)))
    layout = setup_distributed(tp, timeout_s=config.distributed_timeout_minutes * 60, env=env)
    result = TrainResult(kind, 0, 0)
    loader = None
    bar = None
    metrics = None
    finished = False
    try:
        gbs = config.global_batch_size or config.micro_batch_size * layout.dp_size
        num_samples = config.train_iters * gbs
        source = _build_source(config, kind, info, seq_length, num_samples, layout)

        seed_everything(config.seed)  # identical full weights on every rank before sharding
        model = build_model(model_config)
        model = parallel.apply_tensor_parallel(
            model, layout.tp_group, dropout_seed=config.seed + 1009 * layout.dp_rank
        )
        model.to(layout.device)
        optimizer = _make_optimizer(model, config)
        # dropout: the same stream on the TP ranks of one DP rank, different across DP ranks
        seed_everything(config.seed + 1 + 1009 * layout.dp_rank)

        start_step = 0
        if resume is not None:
            start_step = _load_checkpoint(resume, model, optimizer, layout, parallel)
        end_step = config.train_iters
        if start_step >= end_step:
            log.info(
                "checkpoint %s is already at step %d of --train-iters %d; nothing to do",
                resume,
                start_step,
                end_step,
            )
        result.start_step = result.end_step = start_step

        tokens_per_sample = (
            seq_length if kind == "gpt" else config.encoder_seq_length + source.decoder_length
        )
        tokens_per_step = gbs * tokens_per_sample
        if layout.is_main:
            n_params = sum(p.numel() for p in model.parameters()) * (tp if tp > 1 else 1)
            log.info(
                "%s %s (~%.1fM parameters), TP=%d DP=%d, global batch %d (micro %d, "
                "accumulation %d),"
                " %d tokens/step, steps %d..%d",
                kind,
                config.model,
                n_params / 1e6,
                tp,
                layout.dp_size,
                gbs,
                config.micro_batch_size,
                gbs // (config.micro_batch_size * layout.dp_size),
                tokens_per_step,
                start_step,
                end_step,
            )
            if config.metrics:
                from trainer.metrics import MetricsWriter

                metrics = MetricsWriter(config.metrics, resume_from=start_step)
            bar = _progress_bar(config, start_step, end_step, kind)

        loader = BatchLoader(
            source,
            start_step=start_step,
            end_step=end_step,
            micro_batch_size=config.micro_batch_size,
            global_batch_size=gbs,
            dp_rank=layout.dp_rank,
            dp_size=layout.dp_size,
        )
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if layout.device.type == "cuda"
            else contextlib.nullcontext()
        )
        decay_iters = config.lr_decay_iters or config.train_iters
        params = [p for p in model.parameters() if p.requires_grad]
        rates, t_loop = [], time.perf_counter()
        wait_before = 0.0
        step_t0 = time.perf_counter()
        for batches in loader:
            step = batches.step
            lr = lr_at(
                step,
                lr=config.lr,
                min_lr=config.min_lr,
                warmup_iters=config.lr_warmup_iters,
                decay_iters=decay_iters,
            )
            loss, grad_norm = _train_step(
                model,
                optimizer,
                batches.micro_batches,
                params,
                kind=kind,
                layout=layout,
                autocast=autocast,
                lr=lr,
                clip=config.clip_grad,
                vocab_size=model_config.vocab_size,
                parallel=parallel,
            )
            now = time.perf_counter()
            dt, step_t0 = now - step_t0, now
            wait = loader.wait_s - wait_before
            wait_before = loader.wait_s
            done = step + 1
            result.losses.append(loss)
            result.end_step = done
            if not math.isfinite(loss):
                raise DataprepError(
                    f"step {done}: the loss is {loss}; lower --lr or check the data"
                )
            tps = tokens_per_step / dt if dt > 0 else 0.0
            if step > start_step:
                rates.append(tps)
            if layout.is_main:
                rec = {
                    "step": done,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": tps,
                    "grad_norm": grad_norm,
                    "step_time_s": dt,
                    "data_wait_s": wait,
                    "tokens": done * tokens_per_step,
                }
                if metrics:
                    metrics.write(rec)
                if bar is not None:
                    bar.set_postfix_str(
                        f"loss {loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s", refresh=False
                    )
                    bar.update(1)
                elif done % config.log_interval == 0 or done == end_step:
                    log.info(
                        "step %d/%d loss %.4f lr %.3e %.0f tokens/s", done, end_step, loss, lr, tps
                    )
            last = done == end_step
            exiting = bool(config.exit_interval and done % config.exit_interval == 0)
            if config.save and (
                last or exiting or (config.save_interval and done % config.save_interval == 0)
            ):
                _save_checkpoint(
                    config, model, optimizer, layout, done, kind, model_config, parallel
                )
            if exiting and not last:
                log.info("--exit-interval %d: stopping after step %d", config.exit_interval, done)
                break
        loop_s = time.perf_counter() - t_loop
        result.seconds = loop_s
        result.tokens_per_s = float(np.median(rates)) if rates else 0.0
        result.data_wait_share = loader.wait_s / loop_s if loop_s > 0 else 0.0
        finished = True
    finally:
        if loader is not None:
            loader.close()
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
            result.metrics_path = config.metrics
        try:
            # before the teardown: all of this rank's work is done once teardown starts
            if finished and layout.is_main and config.metrics and result.end_step > 0:
                from trainer.metrics import plot_loss_curve, read_metrics

                png = config.loss_curve or str(Path(config.metrics).with_suffix(".png"))
                out = plot_loss_curve(
                    [r for r in read_metrics(config.metrics) if "loss" in r],
                    png,
                    title=f"{config.model} TP={tp}",
                )
                result.loss_curve_path = str(out) if out else None
        finally:
            teardown_distributed(layout)
    if layout.is_main:
        log.info(
            "done: step %d, %.1f s, %.0f tokens/s, %.2f%% of the time waiting for data",
            result.end_step,
            result.seconds,
            result.tokens_per_s,
            100 * result.data_wait_share,
        )
    return result


def _check_lengths(config: TrainConfig, kind: str, mc: Any) -> int:
    if kind == "gpt":
        seq = config.seq_length or mc.block_size
        if seq > mc.block_size:
            raise UsageError(
                f"--seq-length {seq} exceeds the model's block_size {mc.block_size} "
                "(position table rows): shorten it or use a model with a larger block_size"
            )
        return seq
    from dataprep.sampling.t5 import T5Samples

    _, targets = T5Samples.lengths_for(
        config.encoder_seq_length,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
    )
    if config.decoder_seq_length is not None and config.decoder_seq_length < targets:
        raise UsageError(
            f"--decoder-seq-length {config.decoder_seq_length} is shorter than the {targets} "
            f"target ids span corruption makes for --encoder-seq-length "
            f"{config.encoder_seq_length}: omit it or raise it to {targets}"
        )
    return config.encoder_seq_length


def _build_source(
    config: TrainConfig, kind: str, info: DataInfo, seq_length: int, num_samples: int, layout: Any
) -> Any:
    from trainer.data import make_source

    if kind == "gpt":
        return make_source(
            "gpt",
            data_path=config.data_path,
            seq_length=seq_length,
            num_samples=num_samples,
            split=config.split,
            seed=config.seed,
            cache_dir=config.data_cache_path,
        )
    from dataprep.sampling.t5 import sentinel_ids_of
    from dataprep.tokenizers import load_tokenizer

    if info.tokenizer_spec is None:
        raise UsageError(
            "mT5 span corruption needs the tokenizer's sentinels and EOS: the dataset has no "
            "manifest naming its tokenizer; pass --tokenizer NAME_OR_PATH"
        )
    tok = load_tokenizer(info.tokenizer_spec)
    sentinels = sentinel_ids_of(tok)
    from dataprep.sampling.t5 import T5Samples

    _, targets = T5Samples.lengths_for(
        config.encoder_seq_length,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
    )
    return make_source(
        "mt5",
        data_path=config.data_path,
        encoder_length=config.encoder_seq_length,
        decoder_length=config.decoder_seq_length or targets,
        num_samples=num_samples,
        split=config.split,
        seed=config.seed,
        sentinel_ids=sentinels,
        eos_id=tok.eos_id,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
        pad_id=tok.pad_id if tok.pad_id is not None else 0,
    )


def _make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps
    )


def _forward(model: Any, batch: Any, kind: str) -> Any:
    if kind == "gpt":
        return model(batch.tokens)
    return model(batch.encoder_ids, batch.decoder_input_ids, batch.encoder_mask)


def _train_step(
    model,
    optimizer,
    micro_batches,
    params,
    *,
    kind,
    layout,
    autocast,
    lr,
    clip,
    vocab_size,
    parallel,
) -> tuple[float, float]:
    """One optimizer step over the micro-batches; (global mean token loss, gradient norm)."""
    import torch
    import torch.distributed as dist

    batches = [b.to(layout.device) for b in micro_batches]
    targets = [b.targets() for b in batches]
    for b, t in zip(batches, targets, strict=True):
        ids = b.tokens if kind == "gpt" else b.encoder_ids
        if int(ids.max()) >= vocab_size or int(t.max()) >= vocab_size:
            bad = max(int(ids.max()), int(t.max()))
            raise DataprepError(
                f"the data holds token id {bad} but the model's vocabulary is {vocab_size}"
            )
    counts = torch.stack([(t != -100).sum() for t in targets]).to(torch.float64)
    total = counts.sum()
    if layout.dp_group is not None:
        dist.all_reduce(total, group=layout.dp_group)
    loss_sum = torch.zeros((), dtype=torch.float64, device=layout.device)
    for b, t, n in zip(batches, targets, counts, strict=True):
        with autocast:
            logits = _forward(model, b, kind)
        mean = parallel.cross_entropy(
            logits.float(), t, ignore_index=-100, tp_group=layout.tp_group
        )
        # the step loss is the mean over the global batch's target tokens, whatever the split into
        # micro-batches and DP ranks
        scaled = mean * (n / total).to(mean.dtype)
        scaled.backward()
        loss_sum += scaled.detach().to(torch.float64)
    if layout.dp_group is not None:
        grads = [p.grad for p in params if p.grad is not None]
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=layout.dp_group)
        for g, r in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(r)
        dist.all_reduce(loss_sum, group=layout.dp_group)
    grad_norm = parallel.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss_sum), float(grad_norm)


def _progress_bar(config: TrainConfig, start: int, end: int, kind: str) -> Any:
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=end,
        initial=start,
        desc=f"train {config.model}",
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )


# -------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_TRAINER_FILE = "trainer_state.json"


def _find_checkpoint(load: str | None) -> str | None:
    if load is None:
        return None
    from trainer import checkpoint

    if not os.path.isdir(load):
        raise DataprepError(f"--load {load}: no such directory")
    found = checkpoint.find_latest(load)
    if found is None:
        log.warning("--load %s holds no checkpoint; starting from scratch", load)
    return found


def _checkpoint_model_config(path: str, kind: str, mc: Any, config: TrainConfig) -> Any:
    """This run's model config adjusted to a checkpoint: same architecture required (else a clear
    error); its padded vocabulary is kept when the TP size divides it, so resharding is exact."""
    from trainer import checkpoint

    meta = checkpoint.read_metadata(path)
    saved_kind = {"GPT": "gpt", "MT5": "mt5"}.get(meta["model_type"], meta["model_type"])
    saved, now = meta["config"], dataclasses.asdict(mc)
    ignore = checkpoint.RESUMABLE_FIELDS
    keys = set(saved) | set(now)
    diff = sorted(k for k in keys if k not in ignore and saved.get(k) != now.get(k))
    if saved_kind != kind:
        raise DataprepError(
            f"--load {path}: the checkpoint holds a {saved_kind} model but --model {config.model} "
            f"is {kind}; resume with the checkpoint's architecture"
        )
    if diff:
        what = ", ".join(f"{k}={saved.get(k)} (now {now.get(k)})" for k in diff)
        hint = " (another tokenizer's data?)" if "vocab_size" in diff else ""
        raise DataprepError(
            f"--load {path}: the checkpoint's {kind} config differs from --model {config.model} on "
            f"this data: {what}{hint}; resume with the same architecture and tokenizer"
        )
    rows, tp = int(saved["padded_vocab_size"]), config.tensor_model_parallel_size
    if rows != mc.padded_vocab_size and rows % tp == 0 and rows >= mc.vocab_size:
        log.info("keeping the checkpoint's %d embedding rows (TP=%d divides them)", rows, tp)
        return dataclasses.replace(mc, padded_vocab_size=rows)
    return mc


def _save_checkpoint(config, model, optimizer, layout, step, kind, mc, parallel) -> None:
    from trainer import checkpoint

    extra = {
        "step": step,
        "model_kind": kind,
        "train_config": json.loads(config.to_json()),
        "rng": {**rng_state(), **parallel.get_rng_state(model)},
        "tp_size": layout.tp_size,
        "dp_rank": layout.dp_rank,
        "tp_rank": layout.tp_rank,
    }
    checkpoint.save_checkpoint(
        config.save,
        model,
        optimizer,
        step=step,
        extra=extra,
        tp_group=layout.tp_group,
        dp_rank=layout.dp_rank,
    )


def _load_checkpoint(path: str, model, optimizer, layout, parallel) -> int:
    from trainer import checkpoint

    extra = checkpoint.load_checkpoint(
        path, model, optimizer, tp_group=layout.tp_group, dp_rank=layout.dp_rank
    )
    if "step" not in extra:
        raise DataprepError(
            f"--load {path}: the checkpoint has no trainer state (step, RNG); "
            "it was not written by this trainer"
        )
    step = int(extra["step"])
    rng = extra.get("rng")
    if rng is not None:
        set_rng_state(rng)
        if extra.get("tp_size") != layout.tp_size:
            rng = {k: v for k, v in rng.items() if k != "tp"}  # per-TP-rank streams do not map
        parallel.set_rng_state(model, rng)
    log.info("resumed from %s at step %d", path, step)
    return step


if __name__ == "__main__":
    sys.exit(main())
