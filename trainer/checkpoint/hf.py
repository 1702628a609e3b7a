"""Hugging Face conversion: any of our models through its architecture's `HFAdapter`, and
`export_hf` / `import_hf` of whole checkpoints.

    GPT  <-> GPT2LMHeadModel              q, k, v -> one Conv1D c_attn; every Linear -> Conv1D
    GPTJ <-> GPTJForCausalLM              the same names, nn.Linear on both sides
    MT5  <-> MT5ForConditionalGeneration  the same names; encoder/decoder embed_tokens = shared

The name tables are beside each model (trainer/models/{gpt,gptj,mt5}_hf.py); export cuts the
padded vocabulary rows to the tokenizer's size and import zero-pads them back.

Export merges the TP shards, maps the weights, writes config.json, model.safetensors,
generation_config.json and the tokenizer the data was built with
(dataprep/tokenizers/hf_export.py) under a temporary name, loads the folder back with
transformers' Auto class, compares its logits with ours on a probe batch, and only then renames it
into place. Import reads a GPT-2 / GPT-J / mT5 folder into a step-0 checkpoint without optimizer
state.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dataprep.errors import ConfigError, DataConfigError, DataprepError
from trainer.models import (
    ARCHITECTURES,
    architecture_of,
    architecture_of_hf,
    architecture_of_model_type,
)

SUPPORTED = ", ".join(f"{a.hf.model_type} ({a.hf.hf_class})" for a in ARCHITECTURES.values())


def to_hf_state_dict(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A full (TP=1) state dict of ours -> HF keys and shapes, vocabulary cut to `vocab_size`."""
    return architecture_of(config).hf.to_hf(sd, config)


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """HF keys and shapes -> a full (TP=1) state dict of ours, vocabulary zero-padded to
    `padded_vocab_size`; the inverse of `to_hf_state_dict`."""
    return architecture_of(config).hf.from_hf(hf, config)


def hf_config(config: Any, *, eos_id: int | None = None, pad_id: int | None = None):
    """The transformers config object matching one of our model configs."""
    return architecture_of(config).hf.to_hf_config(config, eos_id=eos_id, pad_id=pad_id)


def config_from_hf(hf: Any) -> Any:
    """One of our model configs from a transformers config (gpt2, gptj, mt5)."""
    arch = architecture_of_hf(hf.model_type)
    if arch is None:
        raise DataprepError(f"unsupported HF model_type {hf.model_type!r}; supported: {SUPPORTED}")
    return arch.hf.from_hf_config(hf)


def build_hf_model(config: Any, sd: dict[str, torch.Tensor], **ids: int | None):
    """The transformers model for one of our configs, loaded from our full state dict."""
    import transformers

    adapter = architecture_of(config).hf
    model = getattr(transformers, adapter.hf_class)(hf_config(config, **ids))
    missing, unexpected = model.load_state_dict(to_hf_state_dict(sd, config), strict=False)
    # buffers HF rebuilds itself (GPT-J's rotary table) are not in our state dict
    rebuilt = ("embed_positions", "attn.bias", "masked_bias")
    missing = [k for k in missing if not k.endswith(rebuilt)]
    if missing or unexpected:
        raise RuntimeError(f"HF mapping out of date: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _special_ids(config: Any, tok: Any) -> dict[str, int | None]:
    from trainer.models.mt5 import MT5Config

    if isinstance(config, MT5Config):
        return {"eos_id": config.eos_token_id, "pad_id": config.pad_token_id}
    eos = tok.eos_id if tok.eos_id is not None else tok.eod_id
    return {"eos_id": eos, "pad_id": tok.pad_id}


def _probe_logits(model: Any, config: Any, hf: bool) -> torch.Tensor:
    """Logits of a fixed probe sequence, cut to the real vocabulary."""
    from trainer.models.mt5 import MT5Config

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=g)
    with torch.no_grad():
        if isinstance(config, MT5Config):
            dec = torch.randint(0, config.vocab_size, (2, 5), generator=g)
            out = model(input_ids=ids, decoder_input_ids=dec).logits if hf else model(ids, dec)
        else:
            out = model(input_ids=ids).logits if hf else model(ids)
    return out[..., : config.vocab_size].float()


def _distinct_parameters(hf_model: Any) -> int:
    """Parameters of an HF model, each tied or shared weight once (GPT-2's head is its wte; T5's
    encoder/decoder embed_tokens are `shared`, though transformers 5 builds an untied mT5 in memory
    with copies of it)."""
    sd = hf_model.state_dict()
    aliases = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    sizes = {
        t.data_ptr(): t.numel()
        for name, t in sd.items()
        if not (name in aliases and "shared.weight" in sd)
    }
    return sum(sizes.values())


@dataclass
class ExportSummary:
    out: str
    hf_class: str
    checkpoint: str
    tp: int
    step: int
    params: int
    vocab_size: int
    padded_vocab_size: int
    tokenizer: str
    max_logit_diff: float | None  # ours vs the reloaded folder on a probe, None = not checked


def export_hf(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> ExportSummary:
    """Write checkpoint (a `--save` root or one iteration, any TP) as an HF folder `out`."""
    import transformers

    from dataprep.tokenizers import load_tokenizer
    from dataprep.tokenizers.hf_export import save_hf_tokenizer
    from trainer import checkpoint as ckpt
    from trainer.models import build_model

    path = ckpt.resolve_checkpoint(checkpoint, what="checkpoint")
    meta = ckpt.read_metadata(path)
    arch = architecture_of_model_type(meta["model_type"])
    adapter = arch.hf
    config = ckpt.load_config(path)
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{ConfigError.quote(out)} exists and is not empty; pass {{overwrite}} to replace it",
            "overwrite",
        )
    spec = ckpt.tokenizer_spec(meta, tokenizer)
    if spec is None:
        raise ConfigError(
            f"{ConfigError.quote(path)} does not say which tokenizer its data was built with (no "
            "manifest found); pass {tokenizer} NAME_OR_PATH",
            "tokenizer",
        )
    tok = load_tokenizer(spec)
    if tok.vocab_size != config.vocab_size:
        raise DataConfigError(
            f"the tokenizer {ConfigError.quote(spec)} has {tok.vocab_size} ids but the model was "
            f"trained for {config.vocab_size}; pass the tokenizer the data was built with "
            "({tokenizer})",
            "tokenizer",
        )
    sd, _ = ckpt.merge_checkpoint(path)
    ids = _special_ids(config, tok)
    hf_model = build_hf_model(config, sd, **ids)
    gen = hf_model.generation_config
    gen.eos_token_id = ids["eos_id"]
    gen.pad_token_id = ids["pad_id"] if ids["pad_id"] is not None else ids["eos_id"]
    if arch.task == "mt5":
        gen.decoder_start_token_id = config.decoder_start_token_id
    else:
        gen.bos_token_id = ids["eos_id"]

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf_model.save_pretrained(tmp)
        save_hf_tokenizer(tok, tmp)
        diff = None
        if verify:
            ours = build_model(config)
            ours.load_state_dict(sd)
            reloaded = getattr(transformers, adapter.auto).from_pretrained(tmp).eval()
            a, b = _probe_logits(ours.eval(), config, False), _probe_logits(reloaded, config, True)
            diff = float((a - b).abs().max())
            if type(reloaded).__name__ != adapter.hf_class or diff > 1e-4:
                raise DataprepError(
                    f"the written folder loads as {type(reloaded).__name__} with "
                    f"logits {diff:.2e} away from the checkpoint's (limit 1e-4); not written"
                )
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportSummary(
        out=str(out),
        hf_class=adapter.hf_class,
        checkpoint=str(path),
        tp=int(meta["tp"]),
        step=int(meta["step"]),
        params=_distinct_parameters(hf_model),
        vocab_size=config.vocab_size,
        padded_vocab_size=config.padded_vocab_size,
        tokenizer=spec,
        max_logit_diff=diff,
    )


def import_hf(
    hf_dir: str | os.PathLike, root: str | os.PathLike, *, overwrite: bool = False
) -> tuple[str, Any]:
    """A GPT-2 / GPT-J / mT5 folder -> a checkpoint `root/iter_0000000` (step 0, no optimizer
    state) that `dataprep train --load root` continues from at any TP; (its path, its config)."""
    import transformers

    from dataprep.tokenizers import load_tokenizer
    from trainer import checkpoint as ckpt
    from trainer.models import build_model

    hf_dir, root = Path(hf_dir), Path(root)
    if not hf_dir.is_dir():
        raise DataprepError(f"{hf_dir}: no such directory")
    if not (hf_dir / "config.json").is_file():
        raise DataprepError(
            f"{hf_dir} has no config.json; expected a Hugging Face model folder "
            f"(save_pretrained) of one of: {SUPPORTED}"
        )
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ConfigError(
            f"{ConfigError.quote(root)} exists and is not empty; pass {{overwrite}}", "overwrite"
        )
    try:
        hf_config_obj = transformers.AutoConfig.from_pretrained(hf_dir)
    except (OSError, ValueError, KeyError) as e:
        raise DataprepError(f"{hf_dir}/config.json: cannot read it: {e}") from e
    found = getattr(hf_config_obj, "model_type", None)
    arch = architecture_of_hf(found)
    if arch is None:
        names = getattr(hf_config_obj, "architectures", None) or []
        raise DataprepError(f"{hf_dir} holds a {found!r} model {names}; supported: {SUPPORTED}")
    config = config_from_hf(hf_config_obj)
    try:
        hf_class = getattr(transformers, arch.hf.hf_class)
        hf_model = hf_class.from_pretrained(hf_dir, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise DataprepError(f"{hf_dir}: cannot load the weights: {e}") from e
    model = build_model(config)
    model.load_state_dict(from_hf_state_dict(hf_model.state_dict(), config))
    spec = None
    if (hf_dir / "tokenizer.json").is_file():
        try:
            if load_tokenizer(str(hf_dir)).vocab_size == config.vocab_size:
                spec = str(hf_dir.absolute())
        except DataprepError:
            spec = None
    if overwrite and root.exists():
        shutil.rmtree(root)
    path = ckpt.save_checkpoint(
        root,
        model,
        None,
        step=0,
        extra={"step": 0, "imported_from": str(hf_dir)},
        info={"tokenizer": spec, "imported_from": str(hf_dir.absolute())},
    )
    return str(path), config
