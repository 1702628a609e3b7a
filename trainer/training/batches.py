"""Training batches as tensors: `GPTBatch`, `T5Batch` and the collate functions that build them.

GPT (`collate_gpt`): windows of seq_length+1 ids, `tokens = w[:-1]`, `labels = w[1:]`; with
`PackedData`, Megatron's packed-data loss mask, position ids and documents. T5 (`collate_t5`):
inputs padded with pad 0 (masked out), labels padded with -100 (`IGNORE_INDEX`), decoder input =
labels shifted right behind decoder start 0 (HF `_shift_right`, `shift_right_np`). A batch's
`.to(device)` of pinned tensors does not block (`pin_memory_for`: only for CUDA).
data.py's sources and `BatchLoader` produce these batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dataprep.errors import DataConfigError

IGNORE_INDEX = -100  # label value the loss skips (HF and our cross_entropy)


@dataclass(frozen=True, slots=True)
class GPTBatch:
    tokens: torch.Tensor  # (B, T) int64 inputs
    labels: torch.Tensor  # (B, T) int64, tokens shifted left by one
    loss_mask: torch.Tensor  # (B, T) float32, 1 = counted in the loss
    position_ids: torch.Tensor | None = None  # (B, T) int64 with --reset-position-ids
    segments: torch.Tensor | None = None  # (B, T) int64 documents, with --reset-attention-mask

    def to(self, device: torch.device) -> GPTBatch:
        return GPTBatch(*(_to(t, device) for t in self._tensors()))

    def pin_memory(self) -> GPTBatch:
        return GPTBatch(*(None if t is None else t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return self.tokens, self.labels, self.loss_mask, self.position_ids, self.segments

    @property
    def num_tokens(self) -> int:
        """Tokens the model reads (for tokens/s)."""
        return int(self.tokens.numel())

    def targets(self) -> torch.Tensor:
        """Labels with IGNORE_INDEX where the loss mask is 0."""
        return self.labels.masked_fill(self.loss_mask == 0, IGNORE_INDEX)


@dataclass(frozen=True, slots=True)
class T5Batch:
    encoder_ids: torch.Tensor  # (B, Te) int64, padded with pad id 0
    decoder_input_ids: torch.Tensor  # (B, Td) int64, [0] + labels[:-1], -100 -> 0
    labels: torch.Tensor  # (B, Td) int64, padded with -100
    encoder_mask: torch.Tensor  # (B, Te) bool, True = real token

    def to(self, device: torch.device) -> T5Batch:
        return T5Batch(*(_to(t, device) for t in self._tensors()))

    def pin_memory(self) -> T5Batch:
        return T5Batch(*(t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.encoder_ids, self.decoder_input_ids, self.labels, self.encoder_mask

    @property
    def num_tokens(self) -> int:
        return int(self.encoder_ids.numel() + self.decoder_input_ids.numel())

    def targets(self) -> torch.Tensor:
        return self.labels


Batch = GPTBatch | T5Batch


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """`t` on `device`; asynchronous only from pinned memory (from pageable memory CUDA would
    stage the copy and block anyway)."""
    return None if t is None else t.to(device, non_blocking=t.is_pinned())


def pin_memory_for(device: torch.device | str) -> bool:
    """Whether batches bound for `device` are staged in pinned host memory: only for CUDA, where
    page-locked memory lets the copy run asynchronously (without CUDA pinning fails)."""
    return torch.device(device).type == "cuda"


# ------------------------------------------------------------------------------------------ collate
@dataclass(frozen=True, slots=True)
class PackedData:
    """Megatron's packed-data flags and the EOD id they look for."""

    eod: int
    eod_mask_loss: bool = False
    reset_position_ids: bool = False
    reset_attention_mask: bool = False


def collate_gpt(windows: Sequence[np.ndarray], packed: PackedData | None = None) -> GPTBatch:
    """Stack GPT windows of seq_length+1 ids into a batch; with `packed`, the loss mask,
    positions and documents of each window as megatron-core's GPTDataset computes them."""
    w = np.stack([np.asarray(x, dtype=np.int64) for x in windows])
    tokens, labels = torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())
    if packed is None:
        return GPTBatch(tokens, labels, torch.ones(tokens.shape, dtype=torch.float32))
    from dataprep.sampling import packed_masks

    masks = [packed_masks(row, packed.eod, eod_mask_loss=packed.eod_mask_loss,
                          reset_position_ids=packed.reset_position_ids,
                          reset_attention_mask=packed.reset_attention_mask)
             for row in w[:, :-1]]  # fmt: skip
    return GPTBatch(
        tokens,
        labels,
        torch.from_numpy(np.stack([m.loss_mask for m in masks])),
        torch.from_numpy(np.stack([m.position_ids for m in masks]))
        if packed.reset_position_ids else None,
        torch.from_numpy(np.stack([m.segments for m in masks]))
        if packed.reset_attention_mask else None,
    )  # fmt: skip


def shift_right_np(labels: np.ndarray, *, decoder_start: int = 0, pad_id: int = 0) -> np.ndarray:
    """HF `_shift_right`: prepend decoder_start, drop the last label, -100 -> pad."""
    out = np.empty_like(labels)
    out[..., 0] = decoder_start
    out[..., 1:] = labels[..., :-1]
    out[out == IGNORE_INDEX] = pad_id
    return out


def collate_t5(
    examples: Sequence[Any], *, encoder_length: int, decoder_length: int, pad_id: int = 0
) -> T5Batch:
    """Pad T5 examples (`.inputs`, `.targets`, EOS included) to fixed lengths."""
    B = len(examples)
    enc = np.full((B, encoder_length), pad_id, dtype=np.int64)
    lab = np.full((B, decoder_length), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((B, encoder_length), dtype=bool)
    for i, ex in enumerate(examples):
        x, y = np.asarray(ex.inputs), np.asarray(ex.targets)
        if x.size > encoder_length or y.size > decoder_length:
            raise DataConfigError(
                f"T5 sample {getattr(ex, 'index', i)} has {x.size} encoder / {y.size} decoder "
                f"ids, more than {{encoder_seq_length}} {encoder_length} / "
                f"{{decoder_seq_length}} {decoder_length}",
                "encoder_seq_length",
                "decoder_seq_length",
            )
        enc[i, : x.size] = x
        mask[i, : x.size] = True
        lab[i, : y.size] = y
    dec = shift_right_np(lab, decoder_start=0, pad_id=pad_id)
    return T5Batch(
        torch.from_numpy(enc), torch.from_numpy(dec), torch.from_numpy(lab), torch.from_numpy(mask)
    )
