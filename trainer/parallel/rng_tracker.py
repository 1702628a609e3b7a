"""The per-rank dropout RNG inside TP regions (megatron-core `tensor_parallel/random.py`, its
"model-parallel RNG tracker"), on CPU and CUDA, and its part of a checkpoint's RNG state.

Dropout inside an attention / FFN region works on this rank's heads or FFN slice, so it draws from
a generator of its own (seeded with seed + 2718 + tp_rank); dropout outside regions uses the global
RNG, which the caller seeds equally on all TP ranks.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class RankRNG:
    """A generator state per device, swapped in by `enter` and out by `exit`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.states: dict[str, torch.Tensor] = {}  # device -> generator state between uses
        self._saved: list[tuple[torch.device, torch.Tensor]] = []

    @staticmethod
    def _get(device: torch.device) -> torch.Tensor:
        return torch.get_rng_state() if device.type == "cpu" else torch.cuda.get_rng_state(device)

    @staticmethod
    def _set(device: torch.device, state: torch.Tensor) -> None:
        if device.type == "cpu":
            torch.set_rng_state(state)
        else:
            torch.cuda.set_rng_state(state, device)

    def enter(self, device: torch.device) -> None:
        key = str(device)
        if key not in self.states:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self.states[key] = g.get_state()
        self._saved.append((device, self._get(device)))
        self._set(device, self.states[key])

    def exit(self) -> None:
        device, saved = self._saved.pop()
        self.states[str(device)] = self._get(device)
        self._set(device, saved)


def get_rng_state(model: nn.Module) -> dict:
    """The CPU torch RNG state plus the model's per-rank TP dropout RNG, for checkpoints. The
    GPU's state is saved by trainer/training/rng.py, for this rank's device only (as Megatron-LM
    does): a rank does not own the other GPUs' generators."""
    state = {"torch": torch.get_rng_state()}
    info = getattr(model, "_tp_info", None)
    if info is not None:
        state["tp"] = {k: v.clone() for k, v in info.rng.states.items()}
    return state


def set_rng_state(model: nn.Module, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    info = getattr(model, "_tp_info", None)
    if info is not None and "tp" in state:
        info.rng.states = {k: v.clone() for k, v in state["tp"].items()}


# ------------------------------------------------------------------------------------------------
# Plans: module-name pattern ("*" = one name component) -> style


def tracker_contexts(rng: RankRNG | None):
    """`context_fn` for torch.utils.checkpoint: the recompute sees the per-rank TP dropout RNG as
    the forward did (the global RNG is restored by checkpoint itself), then the live one returns.

    As Megatron's CheckpointFunction does with its RNG tracker: without it a recomputed region
    would draw new dropout masks and the gradient would not be the forward's.
    """
    if rng is None:
        return contextlib.nullcontext(), contextlib.nullcontext()
    snapshot: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def forward():
        snapshot.update({k: v.clone() for k, v in rng.states.items()})
        yield

    @contextlib.contextmanager
    def recompute():
        live, depth = rng.states, len(rng._saved)
        rng.states = {k: v.clone() for k, v in snapshot.items()}
        try:
            yield
        finally:  # a recompute may stop early (inside a region): drop what it entered
            del rng._saved[depth:]
            rng.states = live

    return forward(), recompute()
