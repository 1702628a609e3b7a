"""Megatron's per-window masks for packed documents: loss_mask, position_ids, attention mask.

As megatron-core `_get_ltor_masks_and_position_ids` under `--eod-mask-loss`,
`--reset-position-ids` and `--reset-attention-mask`: a window holding several documents separated
by EOD gets its loss mask, restarting positions and a block-diagonal causal mask, vectorised in
numpy. The usual entry is `dataprep.sampling.packed_masks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PackedMasks:
    """What Megatron's `--eod-mask-loss`, `--reset-position-ids` and `--reset-attention-mask`
    make of one window's S input tokens (megatron-core `_get_ltor_masks_and_position_ids`):
    `loss_mask` (S,) 0.0 where the input token is EOD with eod_mask_loss, else 1.0;
    `position_ids` (S,) restarting at 0 after each EOD with reset_position_ids; `segments` (S,)
    the document of each position (an EOD belongs to the document it ends), so that with
    reset_attention_mask position i sees position j iff j <= i and segments[j] == segments[i]."""

    loss_mask: np.ndarray
    position_ids: np.ndarray
    segments: np.ndarray

    def attention_mask(self) -> np.ndarray:
        """(S, S) bool in Megatron's convention: True = masked (no attention)."""
        S = self.segments.shape[0]
        allowed = np.tril(np.ones((S, S), dtype=bool))
        allowed &= self.segments[:, None] == self.segments[None, :]
        return ~allowed


def packed_masks(
    tokens: np.ndarray,
    eod: int,
    *,
    eod_mask_loss: bool = False,
    reset_position_ids: bool = False,
    reset_attention_mask: bool = False,
) -> PackedMasks:
    """PackedMasks of the input tokens (a window without its last id), vectorised."""
    tokens = np.asarray(tokens)
    S = tokens.shape[0]
    is_eod = tokens == eod
    loss_mask = np.ones(S, dtype=np.float32)
    if eod_mask_loss:
        loss_mask[is_eod] = 0.0
    after = np.zeros(S, dtype=np.int64)  # 1 where a new document starts (after an EOD)
    after[1:] = is_eod[:-1]
    segments = np.cumsum(after) if reset_attention_mask else np.zeros(S, dtype=np.int64)
    positions = np.arange(S, dtype=np.int64)
    if reset_position_ids:
        starts = np.where(after.astype(bool), positions, 0)
        positions = positions - np.maximum.accumulate(starts)
    return PackedMasks(loss_mask, positions, segments)
