"""`TrainConfig`, a training run's settings, and the model config they resolve to.

`dataprep train` (dataprep/commands/train.py) holds the flags, Megatron's names for these fields,
and turns them into a `TrainConfig` at once. `resolve_model_config` turns `model` (a preset or a
.json/.toml file), the dataset's vocabulary and the dropout settings into a `GPTConfig` /
`MT5Config`; `check_tp_layout` says which model dimension a TP size does not divide.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import ConfigError, DataConfigError, DataprepError

log = logging.getLogger(__name__)

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
    dry_run: bool = False  # print the per-rank memory estimate (training/dry_run.py) and stop
    gpu_memory: float = 80.0  # GiB per rank the dry run's verdict compares the estimate with

    def __post_init__(self) -> None:
        if isinstance(self.data_path, str):
            object.__setattr__(self, "data_path", tuple(self.data_path.split()))
        object.__setattr__(self, "data_path", tuple(self.data_path))
        if not self.data_path and not self.dry_run:
            raise ConfigError(
                "{data_path} is required (except with {dry_run}): a dataset prefix or "
                "'w1 p1 w2 p2 ...'",
                "data_path",
                "dry_run",
            )
        if not self.gpu_memory > 0:
            raise ConfigError(
                f"{{gpu_memory}} must be > 0 (GiB), got {self.gpu_memory}", "gpu_memory"
            )
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
                raise ConfigError(f"{{{name}}} must be >= 1, got {getattr(self, name)}", name)
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
                raise ConfigError(f"{{{name}}} must be >= 1, got {v}", name)
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        if self.lr < 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"need 0 <= {{min_lr}} <= {{lr}}, got {{lr}} {self.lr} {{min_lr}} {self.min_lr}",
                "min_lr",
                "lr",
            )
        if self.lr_warmup_iters < 0:
            raise ConfigError(
                f"{{lr_warmup_iters}} must be >= 0, got {self.lr_warmup_iters}", "lr_warmup_iters"
            )
        if self.clip_grad < 0:
            raise ConfigError(f"{{clip_grad}} must be >= 0, got {self.clip_grad}", "clip_grad")
        for name in ("hidden_dropout", "attention_dropout"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise ConfigError(f"{{{name}}} must be in [0, 1), got {v}", name)
        if self.distributed_timeout_minutes <= 0:
            raise ConfigError(
                "{distributed_timeout_minutes} must be > 0", "distributed_timeout_minutes"
            )
        if self.recompute_granularity not in (None, "full", "selective"):
            raise ConfigError(
                "{recompute_granularity} must be full or selective, got "
                f"{self.recompute_granularity!r}",
                "recompute_granularity",
            )
        if self.sequence_parallel and self.tensor_model_parallel_size < 2:
            raise ConfigError(
                "{sequence_parallel} shards along the sequence across the TP ranks: it needs "
                "{tensor_model_parallel_size} 2 or more",
                "sequence_parallel",
                "tensor_model_parallel_size",
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


def _read_model_file(path: Path) -> dict:
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text(encoding="utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{{model}} {ConfigError.quote(path)}: cannot read the model config: "
            f"{ConfigError.quote(e)}",
            "model",
        ) from e


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
            raise ConfigError(
                f"{{model}} {ConfigError.quote(repr(spec))} is neither a preset "
                f"({', '.join(all_presets())}) nor an existing .json/.toml config file",
                "model",
            )
        fields = dict(_read_model_file(path))
        preset = fields.pop("preset", None)
        name = fields.pop("model", None) or fields.pop("type", None)
        if preset is not None:
            preset_arch = architecture_of_preset(preset)
            if preset_arch is None:
                raise ConfigError(
                    f"{{model}} {ConfigError.quote(path)}: unknown preset "
                    f"{ConfigError.quote(repr(preset))}",
                    "model",
                )
            name = name or preset_arch.name
            fields = {**preset_arch.presets[preset], **fields}
        try:
            arch = architecture_of(str(name)) if name is not None else None
        except DataprepError:
            arch = None
        if arch is None:
            raise ConfigError(
                f'{{model}} {ConfigError.quote(path)}: set "model" to one of '
                f'{sorted(ARCHITECTURES)} (or "preset"), got {ConfigError.quote(repr(name))}',
                "model",
            )
    cls = arch.config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"{{model}} {ConfigError.quote(spec)}: unknown {cls.__name__} fields "
            f"{ConfigError.quote(unknown)}; known: {sorted(known)}",
            "model",
        )
    if vocab_size is not None:
        if from_file and "vocab_size" in fields and int(fields["vocab_size"]) != vocab_size:
            raise DataConfigError(
                f"{{model}} {ConfigError.quote(spec)} has vocab_size {fields['vocab_size']} but "
                f"the dataset's tokenizer has {vocab_size} ids: use a model config for this "
                "tokenizer or the matching dataset",
                "model",
            )
        fields["vocab_size"] = vocab_size
    one_rate = "dropout_rate" in known  # mT5 (HF dropout_rate) has a single dropout
    if config.hidden_dropout is not None:
        fields["dropout_rate" if one_rate else "dropout"] = config.hidden_dropout
    if config.attention_dropout is not None:
        if not one_rate:
            fields["attn_dropout"] = config.attention_dropout
        elif config.hidden_dropout is None or config.attention_dropout != config.hidden_dropout:
            log.warning("mT5 has one dropout rate (HF dropout_rate); attention_dropout is ignored")
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
        raise ConfigError(
            f"{{tensor_model_parallel_size}} {tp} does not divide the model's {what}: "
            "pick a TP size that divides them (or another {model})",
            "tensor_model_parallel_size",
            "model",
        )
