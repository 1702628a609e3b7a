"""Training batches read straight from memory-mapped `.bin/.idx` datasets via dataprep's samplers.

GPT: Megatron's GPTDataset windows (`dataprep.sampling.gpt`, megatron-core `gpt_dataset.py`): sample
k has seq_length+1 ids. T5: canonical span corruption (`dataprep.sampling.t5_samples`, T5's
`span_corruption`) over the documents of the split, sample order shuffled per epoch from the seed.
The sources collate their samples with batches.py (`GPTBatch`, `T5Batch`: shifting and padding).

Which samples a step reads (Megatron's pretraining sampler): with global batch = micro x DP x
accum, step s reads sample indices [s*GBS, (s+1)*GBS); micro-step m of DP rank d gets s*GBS +
m*micro*DP + d*micro + [0, micro). TP ranks of one DP rank read the same samples. The data position
is therefore just the step, so resuming is exact. A background thread prepares the next steps while
the current one trains; `BatchLoader.wait_s` is the time the loop spent waiting for it. When the
run trains on a GPU that thread also copies each batch into pinned (page-locked) host memory, and
a batch's `.to(device)` of pinned tensors does not block, so the host-to-device copy overlaps the
work already queued on the GPU."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from dataprep.errors import ConfigError
from trainer.training.batches import (
    GPTBatch,
    PackedData,
    T5Batch,
    collate_gpt,
    collate_t5,
    pin_memory_for,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ indices
def micro_batch_indices(
    step: int, *, micro_batch_size: int, global_batch_size: int, dp_rank: int, dp_size: int
) -> list[np.ndarray]:
    """Sample indices of each micro-batch DP rank `dp_rank` trains on at `step`."""
    per_micro = micro_batch_size * dp_size
    if global_batch_size % per_micro:
        raise ConfigError(
            f"{{global_batch_size}} {global_batch_size} is not a multiple of {{micro_batch_size}} "
            f"{micro_batch_size} x data-parallel size {dp_size}",
            "global_batch_size",
            "micro_batch_size",
        )
    base = step * global_batch_size + dp_rank * micro_batch_size
    return [
        base + m * per_micro + np.arange(micro_batch_size, dtype=np.int64)
        for m in range(global_batch_size // per_micro)
    ]


def split_bounds(split: str, n: int, index: int) -> tuple[int, int]:
    """[begin, end) of part `index` (0 train, 1 valid, 2 test) of Megatron's split over n items."""
    from dataprep.sampling.split import split_ranges

    span = split_ranges(split, n)[index]
    return (0, 0) if span is None else span


# ------------------------------------------------------------------------------------------ sources
def parse_data_path(words: Sequence[str]) -> list[tuple[float, str]]:
    """`p` | `w1 p1 w2 p2 ...` -> [(weight, prefix)], weights normalized (as Megatron's blend).

    Parsing is `dataprep.sampling.blend.parse_data_path`; a training blend needs explicit weights.
    """
    from dataprep.sampling.blend import normalize
    from dataprep.sampling.blend import parse_data_path as parse

    prefixes, weights = parse(words, blend_needs_weights=True)
    return list(zip(normalize(weights or [1.0]), prefixes, strict=True))


def blend_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Megatron's greedy blend (dataset_index, dataset_sample_index): the sampling module's."""
    from dataprep.sampling.blend import build_blending_indices

    return build_blending_indices(weights, size)


class GPTSource:
    """GPT windows of the train split from `dataprep.sampling.blend.build_gpt_samples`, which
    blends a weighted --data-path as megatron-core does (each dataset asked for
    ceil(ceil(n * w) * 1.005) samples)."""

    def __init__(
        self,
        data_path: Sequence[str],
        *,
        seq_length: int,
        num_samples: int,
        split: str,
        seed: int,
        cache_dir: str | None = None,
        packed: PackedData | None = None,
    ) -> None:
        from dataprep.sampling.blend import build_gpt_samples

        parse_data_path(data_path)  # the trainer's stricter form: a blend needs explicit weights
        self.seq_length = seq_length
        self.packed = packed
        self.samples = build_gpt_samples(
            data_path,
            seq_length=seq_length,
            num_samples=num_samples,
            split=split,
            split_name="train",
            seed=seed,
            cache_dir=cache_dir,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, k: int) -> np.ndarray:
        return np.asarray(self.samples[int(k)])

    def collate(self, items: Sequence[np.ndarray]) -> GPTBatch:
        return collate_gpt(items, self.packed)


class T5Source:
    """Span-corrupted samples of the split's documents, shuffled per epoch; blended if weighted."""

    def __init__(
        self,
        data_path: Sequence[str],
        *,
        encoder_length: int,
        decoder_length: int,
        num_samples: int,
        split: str,
        seed: int,
        sentinel_ids: Sequence[int],
        eos_id: int,
        noise_density: float,
        mean_noise_span_length: float,
        pad_id: int = 0,
    ) -> None:
        from dataprep.sampling.t5_samples import build_t5_samples

        self.encoder_length, self.decoder_length, self.pad_id = (
            encoder_length,
            decoder_length,
            pad_id,
        )
        self.seed = seed
        blend = parse_data_path(data_path)
        self.weights = [w for w, _ in blend]
        self.datasets: list[Any] = []
        for _, prefix in blend:
            ds = build_t5_samples(
                prefix,
                sentinel_ids=sentinel_ids,
                eos_id=eos_id,
                inputs_length=encoder_length,
                noise_density=noise_density,
                mean_noise_span_length=mean_noise_span_length,
                seed=seed,
                split=split,
                split_name="train",
            )
            if ds.targets_length > decoder_length:
                raise ConfigError(
                    f"{{decoder_seq_length}} {decoder_length} is shorter than the "
                    f"{ds.targets_length} target ids span corruption makes for "
                    f"{{encoder_seq_length}} {encoder_length}",
                    "decoder_seq_length",
                    "encoder_seq_length",
                )
            self.datasets.append(ds)
        self.targets_length = self.datasets[0].targets_length
        self.blend = blend_indices(self.weights, num_samples) if len(self.datasets) > 1 else None

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    @lru_cache(maxsize=4)  # noqa: B019 (a few epochs' permutations, freed with the source)
    def _order(self, d: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, d, epoch]).permutation(len(self.datasets[d]))

    def get(self, k: int) -> Any:
        k = int(k)
        if self.blend is not None and k < self.blend[0].size:
            d, j = int(self.blend[0][k]), int(self.blend[1][k])
        else:
            d, j = 0, k
        n = len(self.datasets[d])
        return self.datasets[d][int(self._order(d, j // n)[j % n])]

    def collate(self, items: Sequence[Any]) -> T5Batch:
        return collate_t5(
            items,
            encoder_length=self.encoder_length,
            decoder_length=self.decoder_length,
            pad_id=self.pad_id,
        )


# ------------------------------------------------------------------------------------------- loader
@dataclass(frozen=True, slots=True)
class StepBatches:
    step: int  # 0-based step these micro-batches belong to
    micro_batches: list  # [GPTBatch | T5Batch], in accumulation order


class BatchLoader:
    """Steps [start_step, end_step) of one DP rank's micro-batches, prepared ahead in a thread."""

    def __init__(
        self,
        source: Any,
        *,
        start_step: int,
        end_step: int,
        micro_batch_size: int,
        global_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        prefetch: int = 2,
        device: torch.device | str | None = None,
    ) -> None:
        """`device`: where the loop moves the batches; None = the device this process trains on
        (`trainer.launch.device_type`). Batches are pinned in the prefetch thread for CUDA."""
        if device is None:
            from trainer.launch import device_type

            device = device_type()
        self.device = torch.device(device)
        self.pin_memory = pin_memory_for(self.device)
        self._cuda_index: int | None = None  # the GPU the prefetch thread pins for
        self.source = source
        self.start_step, self.end_step = start_step, end_step
        self.kw = dict(
            micro_batch_size=micro_batch_size,
            global_batch_size=global_batch_size,
            dp_rank=dp_rank,
            dp_size=dp_size,
        )
        micro_batch_indices(0, **self.kw)  # validates the batch sizes now, not in the thread
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def make_step(self, step: int) -> StepBatches:
        """The micro-batches of one step, computed in this thread (no prefetch)."""
        return StepBatches(
            step,
            [
                self.source.collate([self.source.get(k) for k in idx])
                for idx in micro_batch_indices(step, **self.kw)
            ],
        )

    def _pinned(self, batches: StepBatches) -> StepBatches:
        return StepBatches(batches.step, [b.pin_memory() for b in batches.micro_batches])

    def _work(self) -> None:
        try:
            if self._cuda_index is not None:
                # the current GPU is per thread: without this the pinning would create a CUDA
                # context on GPU 0 in every rank
                torch.cuda.set_device(self._cuda_index)
            for step in range(self.start_step, self.end_step):
                item: Any = self.make_step(step)
                if self.pin_memory:
                    item = self._pinned(item)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # handed to the training thread, raised there
            self._queue.put(e)

    def __iter__(self):
        if self.pin_memory:  # "cuda" alone: the GPU setup_distributed made current
            index = self.device.index
            self._cuda_index = torch.cuda.current_device() if index is None else index
        self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
        self._thread.start()
        try:
            for _ in range(self.start_step, self.end_step):
                t0 = time.perf_counter()
                item = self._queue.get()
                self.wait_s += time.perf_counter() - t0
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def make_source(kind: str, **kw: Any) -> GPTSource | T5Source:
    """`kind` "gpt" or "mt5"; keyword arguments as the source classes take."""
    factories: dict[str, Callable[..., Any]] = {"gpt": GPTSource, "mt5": T5Source}
    return factories[kind](**kw)
