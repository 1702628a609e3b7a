"""Helpers for the trainer model / tensor-parallel / checkpoint tests: tiny configs, synthetic
batches, a training step, and a 2-rank gloo launcher (`torch.multiprocessing.spawn`).

Worker functions passed to `run_distributed` must live at module level of an importable module (the
spawned children import them by name).
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer import parallel
from trainer.loss import cross_entropy
from trainer.models.gpt import GPT, GPTConfig
from trainer.models.gptj import GPTJ, GPTJConfig
from trainer.models.mt5 import MT5, MT5Config, shift_right

VOCAB = 1000  # padded to 1024 at TP 1 and 2


def tiny_gpt_config(**overrides) -> GPTConfig:
    fields = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=VOCAB)
    fields.update(dropout=0.0, attn_dropout=0.0)
    fields.update(overrides)
    return GPTConfig(**fields)


def tiny_mt5_config(**overrides) -> MT5Config:
    fields = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=VOCAB)
    fields.update(dropout_rate=0.0)
    fields.update(overrides)
    return MT5Config(**fields)


def tiny_gptj_config(**overrides) -> GPTJConfig:
    fields = dict(n_layer=2, n_head=4, n_embd=64, rotary_dim=8, block_size=32, vocab_size=VOCAB)
    fields.update(overrides)
    return GPTJConfig(**fields)


def build(kind: str, *, seed: int = 0, dtype=torch.float32, **overrides):
    torch.manual_seed(seed)
    if kind == "gpt":
        return GPT(tiny_gpt_config(**overrides)).to(dtype)
    if kind == "gptj":
        return GPTJ(tiny_gptj_config(**overrides)).to(dtype)
    return MT5(tiny_mt5_config(**overrides)).to(dtype)


def batch(kind: str, step: int) -> dict[str, torch.Tensor]:
    """Deterministic synthetic batch number `step`, with ignored targets and encoder padding."""
    g = torch.Generator().manual_seed(1000 + step)
    if kind in ("gpt", "gptj"):
        x = torch.randint(0, VOCAB, (4, 17), generator=g)
        targets = x[:, 1:].clone()
        targets[0, :3] = -100
        return {"inputs": (x[:, :-1],), "targets": targets}
    enc = torch.randint(2, VOCAB, (4, 16), generator=g)
    mask = torch.ones_like(enc)
    mask[2, -5:] = 0
    enc = enc.masked_fill(mask == 0, 0)
    labels = torch.randint(2, VOCAB, (4, 8), generator=g)
    labels[1, -3:] = -100
    return {"inputs": (enc, shift_right(labels), mask), "targets": labels}


def train_step(model, optimizer, b, *, tp_group=None, max_norm: float = 0.5):
    """One AdamW step with clipping; (loss, {name: grad before clipping})."""
    logits = model(*b["inputs"])
    loss = cross_entropy(
        logits, b["targets"], tp_group=tp_group, vocab_size=model.config.vocab_size
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    parallel.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item(), grads


def saved_tensor_bytes(model, run) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for the backward while `run()`
    executes (the activations), e.g. run = lambda: model(x)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def gather_shard(t: torch.Tensor, dim: int | None, group) -> torch.Tensor:
    if dim is None or group is None:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, world: int, marker_dir: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    fn(rank, *args)
    # every check of fn has passed; written before the barrier, so once any rank is past it,
    # all markers exist (a teardown abort then kills the others only after they wrote theirs)
    (Path(marker_dir) / f"done{rank}").write_text("ok")
    dist.barrier()  # before destroy: makes a gloo teardown abort (a rank exits mid-call) rarer
    dist.destroy_process_group()


def run_distributed(fn, *args, tmp_path: Path, nprocs: int = 2) -> None:
    """Run fn(rank, *args) on `nprocs` gloo ranks; a failing rank fails the test with its
    traceback."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    done = [f"done{r}" for r in range(nprocs)]
    try:
        mp.spawn(
            _entry, args=(fn, free_port(), nprocs, str(markers), args), nprocs=nprocs, join=True
        )
    except mp.ProcessExitedException as e:
        # gloo sometimes aborts a rank while destroying the group after all its work passed
        # ("terminate called without an active exception"); that is not a failure of the test
        if e.signal_name != "SIGABRT" or sorted(p.name for p in markers.iterdir()) != done:
            raise
    assert sorted(p.name for p in markers.iterdir()) == done
