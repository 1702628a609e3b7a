"""What the models share: Megatron's vocabulary padding and the padded embedding / head rows."""

from __future__ import annotations

from dataprep.errors import UsageError

# Model config fields that share their name with a flag of some command (train-tokenizer's
# --vocab-size, import-megatron's --num-layers): a model config error names them literally, so the
# CLI does not show that other command's flag for a key of a --model file. Every other model field
# is a ConfigError placeholder, shown by the CLI as the --model file key (commands/common.py).
SHARED_WITH_FLAGS = frozenset({"vocab_size", "num_layers"})


def field_placeholder(name: str) -> str:
    """`name` as it appears in a ConfigError template: "{name}", or the name itself if shared."""
    return name if name in SHARED_WITH_FLAGS else "{" + name + "}"


def field_names(name: str) -> tuple[str, ...]:
    """The ConfigError fields for `field_placeholder(name)`."""
    return () if name in SHARED_WITH_FLAGS else (name,)


def pad_vocab_size(vocab_size: int, tp: int = 1, divisible_by: int = 128) -> int:
    """Megatron's `_vocab_size_with_padding`: round up to a multiple of `divisible_by * tp`.

    Example: GPT-2 50257 -> 50304 (tp 1), 50432 (tp 2); mT5 250100 -> 250112 (tp 1 and 2), 250368
    (tp 4).
    """
    if vocab_size < 1 or tp < 1 or divisible_by < 1:
        raise UsageError(
            f"pad_vocab_size needs positive numbers, got vocab_size={vocab_size}, tp={tp}, "
            f"divisible_by={divisible_by}"
        )
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


def vocab_rows(module_type, *args, **kwargs):
    """An nn.Embedding / nn.Linear with padded vocabulary rows, built without touching the global
    RNG: its constructor's default init would draw a number of values that depends on the padding
    and so shift every parameter initialised after it. `init_vocab_rows_` initialises it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        return module_type(*args, **kwargs)


def init_vocab_rows_(weight, vocab_size: int, *, std: float) -> None:
    """Normal(0, std) for the first `vocab_size` rows of an embedding or head, zeros for the rest.

    The random draws cover exactly the real rows, so neither their values nor the initialisation of
    any later parameter depends on the padding (which follows the TP size); zero padded rows stay
    zero because the loss never sees their logits (trainer/loss.py cross_entropy).
    """
    import torch

    with torch.no_grad():
        torch.nn.init.normal_(weight[:vocab_size], mean=0.0, std=std)
        weight[vocab_size:].zero_()
