"""The GPU path without a GPU: the benchmark's MFU arithmetic and peak table, its clear error when
CUDA is missing, the loader's pinned-memory decision (by device) and non-blocking copies, and the
restore of a per-GPU CUDA RNG state list. CUDA calls are replaced by recorders where needed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.train import TrainConfig
from trainer.training import batches as data_mod
from trainer.training.batches import GPTBatch, collate_gpt, pin_memory_for
from trainer.training.data import BatchLoader
from trainer.training.rng import rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ benchmark
def test_flops_per_token_and_mfu_match_a_hand_calculation(bench):
    # gpt-1.3b: L 24, C 2048, S 2048, vocab 50257 padded to 50304 (multiple of 128)
    # 6 * (24 * 12 * 2048^2 + 50304 * 2048) + 12 * 24 * 2048 * 2048
    # = 6 * (1_207_959_552 + 103_022_592) + 1_207_959_552 = 9_073_852_416
    cfg = TrainConfig(data_path=("unused",), model="gpt-1.3b", make_vocab_size_divisible_by=128)
    kind, fpt = bench.flops_per_token(cfg, 50257)
    assert kind == "gpt" and fpt == 9_073_852_416
    # gpt-350m: L 24, C 1024, S 1024: 6 * (301_989_888 + 51_511_296) + 301_989_888
    cfg = TrainConfig(data_path=("unused",), model="gpt-350m", make_vocab_size_divisible_by=128)
    assert bench.flops_per_token(cfg, 50257)[1] == 2_422_996_992
    # 30,000 tokens/s on one A100: 9_073_852_416 * 30_000 / 312e12 = 0.872486
    assert bench.mfu(9_073_852_416, 30_000, 312e12) == pytest.approx(0.872486, abs=1e-6)
    assert bench.mfu(9_073_852_416, 30_000, 312e12, devices=2) == pytest.approx(0.436243, abs=1e-6)


@pytest.mark.parametrize(
    "name,tflops",
    [
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100-PCIE-40GB", 312),
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA L4", 121),
        ("NVIDIA A10", 125),
        ("NVIDIA A10G", None),
        ("NVIDIA L40S", None),
        ("Tesla T4", None),
    ],
)
def test_peak_table_picks_the_dense_bf16_peak_by_device_name(bench, name, tflops):
    got = bench.peak_bf16_flops(name)
    assert got == (None if tflops is None else tflops * 1e12)


def test_device_cuda_without_cuda_is_a_one_line_usage_error(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", "cuda", "--bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_train: error: --device cuda: torch ") and err.count("\n") == 1


def test_device_cuda_without_cuda_from_the_command_line_has_no_traceback():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cuda", "--bf16", "--model", "gpt-1.3b"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert p.stderr.startswith("bench_train: error: --device cuda:")


def test_more_tp_ranks_than_gpus_is_a_usage_error(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.main(["--device", "cuda", "--tp", "1", "2"]) == 2
    assert "--tp 2 needs 2 GPUs, torch sees 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------- pinned batches
class _Windows:
    """A source of GPT windows k, k+1, ..., k+4."""

    def get(self, k):
        return np.arange(k, k + 5)

    def collate(self, items):
        return collate_gpt(items)


def _loader(**kw):
    return BatchLoader(
        _Windows(), start_step=0, end_step=3, micro_batch_size=2, global_batch_size=4, **kw
    )


def test_pinning_is_decided_by_the_device():
    assert pin_memory_for("cuda") and pin_memory_for(torch.device("cuda", 1))
    assert not pin_memory_for("cpu") and not pin_memory_for("meta")
    assert not _loader(device="cpu").pin_memory and _loader(device="cuda").pin_memory


def test_loader_follows_the_training_device_when_not_told(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not _loader().pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what setup_distributed sees
    assert _loader().pin_memory


def test_cpu_batches_are_not_pinned_and_move_blocking():
    loader = _loader(device="cpu")
    steps = list(loader)
    assert len(steps) == 3
    for s in steps:
        for b in s.micro_batches:
            assert not b.tokens.is_pinned()
            moved = b.to(torch.device("cpu"))
            assert moved.tokens is b.tokens  # no copy on the same device


@pytest.mark.parametrize("device,index", [("cuda", 0), ("cuda:1", 1)])
def test_cuda_loader_pins_every_micro_batch_in_the_thread_on_the_right_gpu(
    monkeypatch, device, index
):
    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))

    def fake_pin(self):
        calls.append(("pin", int(self.tokens[0, 0])))
        return self

    monkeypatch.setattr(GPTBatch, "pin_memory", fake_pin)
    steps = list(_loader(device=device))
    assert [s.step for s in steps] == [0, 1, 2]
    assert calls[0] == ("set_device", index)  # before the first pin, in the prefetch thread
    assert calls[1:] == [("pin", k) for k in (0, 2, 4, 6, 8, 10)]  # micro batches' first ids


class _FakeTensor:
    def __init__(self, pinned):
        self.pinned, self.moves = pinned, []

    def is_pinned(self):
        return self.pinned

    def to(self, device, non_blocking=False):
        self.moves.append((device, non_blocking))
        return self


def test_batch_to_is_non_blocking_exactly_for_pinned_tensors():
    pinned, pageable, mask = _FakeTensor(True), _FakeTensor(False), _FakeTensor(True)
    GPTBatch(pinned, pageable, mask).to("cuda")
    assert pinned.moves == [("cuda", True)] and mask.moves == [("cuda", True)]
    assert pageable.moves == [("cuda", False)]
    assert data_mod._to(None, "cuda") is None


# -------------------------------------------------------------------------------------- CUDA RNG
def test_rng_restore_accepts_the_per_gpu_list_a_checkpoint_holds(monkeypatch):
    # a checkpoint's "cuda" entry is torch.cuda.get_rng_state_all() (trainer.parallel's form)
    state = rng_state()  # CPU, NumPy, Python
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, *a: restored.append(int(s[0])))
    per_gpu = [torch.full((4,), 7, dtype=torch.uint8), torch.full((4,), 9, dtype=torch.uint8)]
    set_rng_state({**state, "cuda": per_gpu})
    assert restored == [9]  # this rank's GPU
    set_rng_state({**state, "cuda": torch.full((4,), 5, dtype=torch.uint8)})
    assert restored == [9, 5]


def test_a_checkpoint_holds_only_this_ranks_gpu_rng_state(monkeypatch):
    """As Megatron-LM: each rank saves and restores the generator of its own device, not every
    visible GPU's (two ranks on one host would otherwise save and reset each other's)."""
    from trainer import parallel
    from trainer.training.rng import rng_state, set_rng_state

    mine = torch.arange(16, dtype=torch.uint8)
    restored = []

    def every_gpu(*args):
        raise AssertionError("touched every GPU's generator")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": mine.clone())
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state)
    )
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)
    model = torch.nn.Linear(2, 2)
    state = {**rng_state(), **parallel.get_rng_state(model)}  # what save_training_checkpoint saves
    assert torch.equal(state["cuda"], mine)
    set_rng_state(state)
    parallel.set_rng_state(model, state)
    assert len(restored) == 1 and torch.equal(restored[0], mine)
