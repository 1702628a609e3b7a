"""The measured peak memory of a few CPU training steps (`measure_peak`), which the tests hold
the estimate of trainer/training/memory.py to.

Each rank is a fresh process started by trainer/launch.py. The peak is Linux's VmHWM after the
steps minus the RSS before the model was built, with glibc told to return freed blocks to the OS
so that the RSS counts the tensors alive rather than the allocator's retention; a one-layer run
first keeps the kernels' code, thread pools and gloo buffers out of the figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

from trainer.training.memory import MemoryInputs


def _proc_status(field: str) -> int:
    """A `VmRSS` / `VmHWM` line of /proc/self/status, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _fixed_mmap_threshold(nbytes: int = 1 << 16) -> None:
    """glibc: serve every allocation of >= 64 KiB by mmap and give it back to the OS on free.

    By default glibc raises its mmap threshold to the size of each mmapped block freed (up to 32
    MiB), after which freed tensors stay in the heap and the RSS counts them: the peak would then
    measure the allocator's retention, not the tensors alive. (A GPU caching allocator has its own
    fragmentation; neither is modelled.)"""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD (also turns the dynamic threshold off)
        libc.mallopt(-1, nbytes)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def measure_peak(inputs: MemoryInputs, *, steps: int = 2, threads_per_rank: int = 1) -> int:
    """Peak RSS growth (bytes, the largest rank's) of `steps` training steps on CPU on synthetic
    batches, each rank a fresh process started by trainer/launch.py: the RSS before the model is
    built is subtracted from the peak after it. The step is the trainer's: the model as
    `parallel.parallelize` makes it (TP, sequence parallelism, recompute), the forward under bf16
    autocast if asked, the logits kept while the fp32 loss of `trainer.loss.cross_entropy` runs
    backward, then trainer/training/optimizer.py's `apply_gradients` (reductions, clipping, AdamW
    or the distributed optimizer). TP x DP ranks; Linux only."""
    from trainer.launch import launch_local
    from trainer.models import architecture_of

    tp = inputs.tensor_model_parallel_size
    world = tp * inputs.data_parallel_size
    with tempfile.TemporaryDirectory(prefix="dataprep-memory-") as out:
        job = {
            "arch": architecture_of(inputs.model_config).name,
            "model": dataclasses.asdict(inputs.model_config),
            "inputs": {
                f.name: getattr(inputs, f.name)
                for f in dataclasses.fields(inputs)
                if f.name != "model_config"
            },
            "steps": steps,
            "out": out,
        }
        code = launch_local(
            world,
            "trainer.training.memory_measure:_measure_rank",
            json.dumps(job),
            threads_per_rank=threads_per_rank,
            report_errors=True,
        )
        if code != 0:
            raise RuntimeError(f"the measuring ranks exited with code {code}")
        peaks = [json.loads(open(os.path.join(out, f"rank{r}.json")).read()) for r in range(world)]
    return max(p["peak"] for p in peaks)


def _measure_rank() -> int:
    """A rank of `measure_peak`: its job is the launcher's payload."""
    from trainer.launch import rank_main

    return rank_main(_measure, name="measure_peak")


def _measure(payload: str) -> int:
    from trainer.launch import setup_distributed, teardown_distributed
    from trainer.models import architecture_of

    _fixed_mmap_threshold()
    job = json.loads(payload)
    arch = architecture_of(job["arch"])
    mc = arch.config(**job["model"])
    x = MemoryInputs(mc, **job["inputs"])
    layout = setup_distributed(x.tensor_model_parallel_size)
    # a one-layer, short-sequence run first: the kernels' code and thread pools, the gloo buffers
    # are loaded once per process, not per model, and are left out of the measured peak
    one = {"n_layer": 1} if arch.task == "gpt" else {"num_layers": 1, "num_decoder_layers": 1}
    small = dataclasses.replace(
        x, model_config=dataclasses.replace(mc, **one), micro_batch_size=1, seq_length=16,
        decoder_seq_length=8 if x.decoder_seq_length else 0,
    )  # fmt: skip
    _train_steps(small, 1, layout, None)
    peak = _train_steps(x, job["steps"], layout, _proc_status)
    with open(os.path.join(job["out"], f"rank{layout.rank}.json"), "w") as f:
        json.dump({"peak": peak}, f)
    teardown_distributed(layout)
    return 0


def _train_steps(x: MemoryInputs, steps: int, layout: Any, status: Any) -> int:
    """`steps` training steps of x's model on synthetic batches; the RSS peak minus the RSS before
    the model was built (0 when `status` is None)."""
    import contextlib

    import torch

    from trainer import parallel
    from trainer.loss import cross_entropy
    from trainer.models import architecture_of, build_model
    from trainer.models.mt5 import shift_right
    from trainer.training.optimizer import apply_gradients, make_optimizer

    mc = x.model_config
    B, V = x.micro_batch_size, mc.vocab_size
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):  # made before the baseline: the data is not the model's memory
        if architecture_of(mc).task == "gpt":
            ids = torch.randint(0, V, (B, x.seq_length + 1), generator=g)
            batches.append(((ids[:, :-1].contiguous(),), ids[:, 1:].contiguous()))
        else:
            enc = torch.randint(2, V, (B, x.seq_length), generator=g)
            labels = torch.randint(2, V, (B, x.decoder_seq_length), generator=g)
            batches.append(((enc, shift_right(labels), torch.ones_like(enc)), labels))
    _reset_peak()
    base = status("VmRSS") if status else 0
    torch.manual_seed(0)
    model = parallel.parallelize(
        build_model(mc),
        layout.tp_group,
        sequence_parallel=x.sequence_parallel,
        recompute_granularity=x.recompute_granularity,
    )
    model.train()
    optimizer = make_optimizer(
        model, layout, weight_decay=0.01, distributed=x.use_distributed_optimizer
    )
    params = [p for p in model.parameters() if p.requires_grad]
    _reset_peak()  # the full model built before sharding is not part of a training step
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if x.bf16 else contextlib.nullcontext()
    for inputs, targets in batches:
        with autocast:
            logits = model(*inputs)
        loss = cross_entropy(logits.float(), targets, tp_group=layout.tp_group, vocab_size=V)
        loss.backward()
        del logits, loss
        apply_gradients(optimizer, params, layout=layout, clip=1.0, lr=1e-3)
    return status("VmHWM") - base if status else 0
