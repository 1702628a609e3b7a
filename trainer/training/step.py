"""One optimizer step of a training run: `_train_step` over a step's micro-batches.

The token ids are checked against the vocabulary on the host copies, the micro-batches run forward
(under the run's autocast) and backward one after another, each loss scaled by its share of the
global batch's target tokens (counted over the DP ranks), and trainer/training/optimizer.py's
`apply_gradients` reduces, clips and applies the gradients. train() in trainer/training/loop.py
calls it once per step.
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import DataprepError
from trainer.loss import cross_entropy
from trainer.training.optimizer import apply_gradients


def _forward(model: Any, batch: Any, kind: str) -> Any:
    if kind == "gpt":
        if batch.position_ids is None and batch.segments is None:
            return model(batch.tokens)
        return model(batch.tokens, position_ids=batch.position_ids, segments=batch.segments)
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
) -> tuple[float, float]:
    """One optimizer step over the micro-batches; (global mean token loss, gradient norm)."""
    import torch
    import torch.distributed as dist

    for b in micro_batches:  # on the host copies: no device sync per micro-batch
        ids = b.tokens if kind == "gpt" else b.encoder_ids
        bad = max(int(ids.max()), int(b.targets().max()))
        if bad >= vocab_size:
            raise DataprepError(
                f"the data holds token id {bad} but the model's vocabulary is {vocab_size}"
            )
    batches = [b.to(layout.device) for b in micro_batches]
    targets = [b.targets() for b in batches]
    counts = torch.stack([(t != -100).sum() for t in targets]).to(torch.float64)
    total = counts.sum()
    if layout.dp_group is not None:
        dist.all_reduce(total, group=layout.dp_group)
    loss_sum = torch.zeros((), dtype=torch.float64, device=layout.device)
    for b, t, n in zip(batches, targets, counts, strict=True):
        with autocast:
            logits = _forward(model, b, kind)
        mean = cross_entropy(
            logits.float(), t, ignore_index=-100, tp_group=layout.tp_group, vocab_size=vocab_size
        )
        # the step loss is the mean over the global batch's target tokens, whatever the split into
        # micro-batches and DP ranks
        scaled = mean * (n / total).to(mean.dtype)
        scaled.backward()
        loss_sum += scaled.detach().to(torch.float64)
    if layout.dp_group is not None:
        dist.all_reduce(loss_sum, group=layout.dp_group)
    grad_norm = apply_gradients(optimizer, params, layout=layout, clip=clip, lr=lr)
    return float(loss_sum), float(grad_norm)
