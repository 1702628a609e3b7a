"""mT5 `<mask>` filling, the interface of NVIDIA's Megatron-mT5 model card.

Each `<mask>` of the prompt becomes the next sentinel (`<extra_id_0>`, `<extra_id_1>`, ..., as
`dataprep preview-masking --prompt`), the encoder input ends with EOS as in training, and the
decoder starts from `decoder_start_token_id` and decodes greedily until EOS or `max_new_tokens`.
The answer is the card's object: `{"prompt", "completion": {"text", "tokens": [[id, piece,
logprob], ...]}, "masked_input"}`. `tokens` are all generated ids but the final EOS (sentinels
included, so they match transformers' `generate`); `text` is the fills with the sentinels left
out; each logprob is the model's log-softmax of the chosen id over the real vocabulary (padded
columns cut), so <= 0. The encoder runs once; the decoder reruns over its short prefix each step
(fills are a few tokens; no KV cache here).
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import ConfigError, UsageError


def masked_ids(prompt: str, tok) -> tuple[list[int], int]:
    """(encoder input ids ending with EOS, number of masks) for a prompt with `<mask>` markers."""
    from dataprep.sampling.prompts import encode_masked_prompt

    ids, n = encode_masked_prompt(prompt, tok, list(tok.sentinel_ids))
    return ids + [tok.eos_id], n


def check_model(model) -> None:
    """UsageError unless `model` is an mT5 (before any prompt is encoded with its tokenizer)."""
    from trainer.models.mt5 import MT5

    if not isinstance(model, MT5):
        raise UsageError(
            f"fill-mask needs an mT5 checkpoint, this one holds a {type(model).__name__}; "
            "for GPT / GPT-J use `dataprep generate`"
        )


def fill_mask(model, tok, prompt: str, *, max_new_tokens: int = 32) -> dict[str, Any]:
    """The card's answer for one prompt (greedy)."""
    import torch

    check_model(model)
    if max_new_tokens < 1:
        raise ConfigError(
            f"{{tokens_to_generate}} must be >= 1, got {max_new_tokens}", "tokens_to_generate"
        )
    inputs, _ = masked_ids(prompt, tok)
    V, eos = model.config.vocab_size, model.config.eos_token_id
    dec = [model.config.decoder_start_token_id]
    out: list[list] = []
    with torch.no_grad():
        enc = model.encoder(model.shared(torch.tensor([inputs])))
        for _ in range(max_new_tokens):
            h = model.decoder(model.shared(torch.tensor([dec])), encoder_hidden=enc)
            logp = torch.log_softmax(model.lm_head(h[0, -1])[:V].float(), dim=-1)
            t = int(logp.argmax())
            dec.append(t)
            if t == eos:
                break
            out.append([t, tok.id_to_piece(t), float(logp[t])])
    sentinels = set(tok.sentinel_ids)
    text = tok.decode([t for t, _, _ in out if t not in sentinels]).strip()
    return {
        "prompt": prompt,
        "completion": {"text": text, "tokens": out},
        "masked_input": " ".join(tok.id_to_piece(i) for i in inputs[:-1]),
    }
