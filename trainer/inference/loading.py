"""Loading a checkpoint for inference: the model (sharded over TP if asked) and its tokenizer."""

from __future__ import annotations

from dataprep.errors import ConfigError, DataprepError
from dataprep.tokenizers import load_tokenizer
from trainer.checkpoint import load_model, read_metadata, resolve_checkpoint, tokenizer_spec


def load_for_inference(path, *, tp_group=None, tokenizer: str | None = None):
    """(model in eval mode, tokenizer, checkpoint dir) of a `dataprep train --save` checkpoint;
    the checkpoint's tokenizer (checkpoint.tokenizer_spec) unless `tokenizer` names another. Serves
    generate, serve, eval, fill-mask and the lm_eval model."""
    ckpt = resolve_checkpoint(path)
    spec = tokenizer_spec(read_metadata(ckpt), tokenizer)
    if not spec:
        raise ConfigError(
            f"{ConfigError.quote(ckpt)}: the checkpoint does not record its tokenizer; pass "
            "{tokenizer} NAME_OR_PATH",
            "tokenizer",
        )
    tok = load_tokenizer(spec)
    model = load_model(ckpt, tp_group=tp_group)
    if tok.vocab_size > model.config.vocab_size:
        raise DataprepError(
            f"{ckpt}: tokenizer {tok.name} has {tok.vocab_size} ids but the model only "
            f"{model.config.vocab_size}; pass the tokenizer the model was trained with"
        )
    return model, tok, ckpt
