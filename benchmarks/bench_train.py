"""Training throughput through the real loop: tokens/s, data-wait share and MFU, on CPU or a GPU.

One code path for both devices: a synthetic GPT-2-vocabulary dataset (and an mT5 one when an mT5
model is asked for), then `trainer.train` for each model and TP size (TP=1 in this process, TP=2
as local ranks), and the numbers read from its metrics JSONL:

- tokens/s: median over the steps after the first two (steady state). Each step's time in the
  metrics ends at the loop's host read of the step loss, which waits for every kernel of the step
  (optimizer included), so on a GPU it is device time; the bench also calls
  torch.cuda.synchronize() before and after each run in this process;
- data wait: time the loop waited for the prefetch thread / loop time (goal < 1 %);
- MFU: model FLOPs per token (`flops_per_token`: GPT 6N + 12 L C S) x tokens/s / (peak x devices);
- peak GiB (GPU, TP=1): torch.cuda.max_memory_allocated over the run;
- masking vs training (when mt5 ran): T5 span-corruption samples/s on one thread
  (`bench_masking.masking_samples_per_second`) over the samples/s one mt5 step consumes.

CPU (`--device cpu`, default): gpt-tiny, a bigger GPT (4 layers, d 256, 4 heads) and mt5-tiny at
TP=1 (2 torch threads) and TP=2 (two ranks of 1 thread). The peak is measured here: a 2048^3
torch.matmul on 2 threads, in bf16 with --bf16, else fp32. GPUs are hidden from the runs
(CUDA_VISIBLE_DEVICES=""), since the trainer uses a GPU whenever it sees one. CPU times vary by up
to 2x on a shared machine: compare the rows of one run, not runs.

GPU (`--device cuda`): gpt-350m and gpt-1.3b at their block size (1024, 2048), TP=1. The peak is
the GPU's dense bf16 tensor-core peak (`PEAK_BF16_TFLOPS`, looked up by
torch.cuda.get_device_name()), or --peak-tflops. Without --bf16 the forward runs in fp32 and the
MFU is still against the bf16 peak. Without CUDA, --device cuda exits 2.

    python benchmarks/bench_train.py [--steps 12] [--repeats 1] [--bf16]
    python benchmarks/bench_train.py --device cuda --bf16 [--model gpt-1.3b] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataprep.indexed import IndexedDatasetWriter
from trainer.train import TrainConfig, resolve_model_config, run, train
from trainer.training.metrics import read_metrics


def write_dataset(
    prefix: Path, *, vocab: int, num_tokens: int, spec: str, eos: int | None, seed: int = 0
) -> str:
    """Random documents of 50..2000 ids below `vocab` (a zipf-ish mix, as text), with a manifest."""
    rng = np.random.default_rng(seed)
    top = vocab - 200  # keep clear of sentinels
    written = 0
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        while written < num_tokens:
            n = int(rng.integers(50, 2000))
            ids = np.minimum(rng.zipf(1.3, size=n), top - 1) + 2
            if eos is not None:
                ids[-1] = eos
            w.add_document(ids.astype(np.uint16))
            written += n
    Path(str(prefix) + ".json").write_text(
        json.dumps(
            {
                "tokens": written,
                "max_token_id": top + 1,
                "tokenizer": {"spec": spec, "vocab_size": vocab},
            }
        )
    )
    return str(prefix)


# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, first match of the device name wins.
# NVIDIA's datasheets give the sparse figure, twice these: A100 (SXM and PCIe) 624; H100 SXM 1979,
# PCIe 1513, NVL 1671 (torchtitan's get_peak_flops uses the same dense values: 312, 989, 756, 835);
# H200 1979 (H100 SXM compute); L4 242; A10 250. The A10G (AWS) has no NVIDIA datasheet and less
# tensor throughput than the A10, so it is not listed: give --peak-tflops.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*NVL", 835.0),
    (r"H100.*PCIe", 756.0),
    (r"H100|H200", 989.0),  # the H100 SXM reports itself as "NVIDIA H100 80GB HBM3"
    (r"A100", 312.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),  # not "A100", "A10G"
)
CPU_MODELS = ("gpt-tiny", "gpt 4x256", "mt5-tiny")
CUDA_MODELS = ("gpt-350m", "gpt-1.3b")


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 FLOP/s of a GPU by its torch.cuda.get_device_name(); None when not listed."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float, devices: int = 1) -> float:
    """Model FLOPs utilisation: flops_per_token x tokens/s over the peak of all `devices`.

    E.g. gpt-1.3b at 2048 tokens (9.074e9 FLOPs per token) training 30,000 tokens/s on one A100
    (312e12): 9.074e9 * 3e4 / 312e12 = 0.872.
    """
    return flops_per_token * tokens_per_s / (peak_flops * devices)


def cuda_unavailable_reason() -> str | None:
    """Why --device cuda cannot run here, in one line; None when a GPU is visible."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"


def matmul_peak_flops(
    n: int = 2048, threads: int = 2, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """Best FLOP/s of an n^3 matmul on `threads` CPU threads in `dtype`."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * n**3 / best


def _matmul_seconds(args: tuple[int, int, int, object]) -> float:
    """Seconds of `repeats` n^3 matmuls on `threads` threads, started at a shared barrier."""
    n, threads, repeats, barrier = args
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    if barrier is not None:
        barrier.wait()
    t = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return time.perf_counter() - t


def tp2_matmul_ceiling(n: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of two processes of one thread each, running matmuls at once, over one process of
    two threads doing the same total work: how much faster TP=2 (two ranks of one thread) could
    be than TP=1 (two threads) on this CPU if training were all matmul. Best of 3 rounds."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    two_ranks, one_process = [], []
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        for _ in range(3):
            barrier = manager.Barrier(2)
            two_ranks.append(max(pool.map(_matmul_seconds, [(n, 1, repeats, barrier)] * 2)))
            one_process.append(_matmul_seconds((n, 2, 2 * repeats, None)))
    return min(one_process) / min(two_ranks)


def measure(config: TrainConfig, *, cuda: bool) -> dict:
    """Run one training job; tokens/s, step time, data-wait share (peak GiB) from its metrics."""
    in_process = config.tensor_model_parallel_size == 1  # else ranks this process only waits for
    if cuda and in_process:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the previous model's blocks
        torch.cuda.reset_peak_memory_stats()
    if in_process:
        train(config)
    elif run(config) != 0:
        raise SystemExit(f"training failed: {config}")
    if cuda and in_process:
        torch.cuda.synchronize()
    recs = [r for r in read_metrics(config.metrics) if "loss" in r][2:]
    if not recs:
        raise SystemExit("--steps must be at least 3: the first two steps are not timed")
    step = sum(r["step_time_s"] for r in recs)
    out = {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
        "step_s": statistics.median(r["step_time_s"] for r in recs),
        "data_wait_share": sum(r["data_wait_s"] for r in recs) / step if step else 0.0,
    }
    if cuda and in_process:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def flops_per_token(config: TrainConfig, vocab_size: int) -> tuple[str, float]:
    """(kind, training FLOPs per token) of the run's full model at its sequence length(s)."""
    from trainer.models import build_model

    kind, mc = resolve_model_config(config, vocab_size=vocab_size)
    with torch.device("meta"):  # the arithmetic needs the config only: no 1.3B parameters in RAM
        model = build_model(mc)
    if kind == "mt5":
        from dataprep.sampling.t5_samples import T5Samples

        dec = T5Samples.lengths_for(config.encoder_seq_length)[1]
        return kind, model.flops_per_token(config.encoder_seq_length, dec)
    return kind, model.flops_per_token(config.seq_length or mc.block_size)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--bf16", action="store_true", help="bf16 autocast of the forward (train --bf16)"
    )
    p.add_argument(
        "--model",
        nargs="+",
        help=f"presets or .json/.toml files; default {' '.join(CPU_MODELS)!r} on CPU, "
        f"{' '.join(CUDA_MODELS)!r} on CUDA",
    )
    p.add_argument("--tp", type=int, nargs="+", help="TP sizes; default 1 2 on CPU, 1 on CUDA")
    p.add_argument("--micro-batch-size", type=int, help="default 8 on CPU, 4 on CUDA")
    p.add_argument("--seq-length", type=int, help="default 128 on CPU, the block size on CUDA")
    p.add_argument(
        "--peak-tflops", type=float, help="peak per device for the MFU (default: measured / table)"
    )
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=1, help="alternate the TP sizes' runs N times")
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error("--steps must be at least 3: the first two steps are not timed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device == "cuda"
    if not cuda:  # before the first CUDA call: the trainer would take a visible GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif (reason := cuda_unavailable_reason()) is not None:
        print(f"bench_train: error: --device cuda: {reason}", file=sys.stderr)
        return 2
    tps = args.tp or ([1] if cuda else [1, 2])
    if cuda and max(tps) > torch.cuda.device_count():
        print(
            f"bench_train: error: --tp {max(tps)} needs {max(tps)} GPUs, torch sees "
            f"{torch.cuda.device_count()}",
            file=sys.stderr,
        )
        return 2
    models = args.model or (CUDA_MODELS if cuda else CPU_MODELS)
    mbs = args.micro_batch_size or (4 if cuda else 8)
    seq = args.seq_length or (None if cuda else 128)

    if args.peak_tflops:
        peak, source = args.peak_tflops * 1e12, "--peak-tflops"
    elif cuda:
        name = torch.cuda.get_device_name()
        peak, source = peak_bf16_flops(name), f"{name}, dense bf16 tensor cores"
        if peak is None:
            print(f"{name} is not in PEAK_BF16_TFLOPS: no MFU (give --peak-tflops)")
    else:
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        peak = matmul_peak_flops(dtype=dtype)
        source = f"{str(dtype).removeprefix('torch.')} matmul 2048^3 on 2 threads, measured"
    if peak is not None:
        print(f"peak: {peak / 1e12:.3f} TFLOP/s per device ({source})")
    if not cuda and 2 in tps:
        print(
            f"TP=2 ceiling: 2 processes x 1 thread of matmuls make {tp2_matmul_ceiling():.2f}x "
            "the FLOP/s of 1 process x 2 threads (the most TP=2 could gain over TP=1 here)"
        )
    if cuda and not args.bf16:
        print("without --bf16 the forward runs in fp32: the MFU is still against the bf16 peak")

    from trainer.models.mt5 import MT5_PRESETS

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets: dict[str, str] = {}

        def dataset(kind: str) -> str:
            if kind not in datasets:
                if kind == "gpt":
                    datasets[kind] = write_dataset(
                        tmp / "gpt", vocab=50257, num_tokens=400_000, spec="gpt2", eos=50256
                    )
                else:
                    from dataprep.tokenizers import load_tokenizer

                    tok = load_tokenizer("mt5-toy")
                    datasets[kind] = write_dataset(
                        tmp / "mt5",
                        vocab=tok.vocab_size,
                        num_tokens=300_000,
                        spec="mt5-toy",
                        eos=tok.eos_id,
                        seed=1,
                    )
            return datasets[kind]

        print(
            f"\n{'model':10s} {'TP':>2s} {'tokens/s':>9s} {'s/step':>7s} {'data wait':>9s} "
            f"{'MFU':>6s}" + (f" {'peak GiB':>8s}" if cuda else "")
        )
        mt5_step_s: dict[int, float] = {}
        for i, name in enumerate(models):
            model = name
            if name == "gpt 4x256":
                model = str(tmp / "gpt-small4.json")
                Path(model).write_text(
                    json.dumps({"preset": "gpt-tiny", "n_layer": 4, "n_embd": 256, "n_head": 4})
                )
            kind = "mt5" if name in MT5_PRESETS else "gpt"
            lengths = {"encoder_seq_length": seq or 512} if kind == "mt5" else {"seq_length": seq}
            rows: dict[int, list[dict]] = {tp: [] for tp in tps}
            for rep in range(args.repeats):
                for tp in tps:
                    cfg = TrainConfig(
                        data_path=(dataset(kind),),
                        model=model,
                        micro_batch_size=mbs,
                        train_iters=args.steps,
                        lr=1e-3 if kind == "mt5" or not cuda else 3e-4,
                        bf16=args.bf16,
                        tensor_model_parallel_size=tp,
                        progress=False,
                        num_threads=None if cuda else (2 if tp == 1 else 1),
                        make_vocab_size_divisible_by=256,
                        metrics=str(tmp / f"{i}-{tp}-{rep}.jsonl"),
                        **lengths,
                    )
                    rows[tp].append(measure(cfg, cuda=cuda))
            vocab = json.loads(Path(dataset(kind) + ".json").read_text())["tokenizer"]
            _, fpt = flops_per_token(cfg, vocab["vocab_size"])
            for tp in tps:
                r = {k: statistics.median(x[k] for x in rows[tp]) for k in rows[tp][0]}
                devices = tp if cuda else 1  # on CPU both TP sizes share the same 2 cores
                u = f"{100 * mfu(fpt, r['tokens_per_s'], peak, devices):5.1f}%" if peak else "    -"
                line = (
                    f"{name:10s} {tp:2d} {r['tokens_per_s']:9,.0f} {r['step_s']:7.3f} "
                    f"{100 * r['data_wait_share']:8.2f}% {u}"
                )
                if cuda:
                    line += f" {r['peak_gib']:8.1f}" if "peak_gib" in r else f" {'-':>8s}"
                print(line)
                if kind == "mt5":
                    mt5_step_s[tp] = r["step_s"]

    if not mt5_step_s:
        return 0
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_masking import masking_samples_per_second
    except ImportError:
        print("\nbenchmarks/bench_masking.py not found: masking ratio skipped")
        return 0
    sps = masking_samples_per_second(inputs_length=128, num_samples=2000)
    print(f"\nT5 masking: {sps:,.0f} samples/s on one thread (encoder length 128)")
    for tp, s in sorted(mt5_step_s.items()):
        train_sps = mbs / s
        print(
            f"mt5 TP={tp}: one step of {mbs} samples takes {s * 1e3:.0f} ms = {train_sps:,.0f} "
            f"samples/s; masking / training = {sps / train_sps:,.1f}x "
            f"(masking one step's batch = {100 * train_sps / sps:.2f}% of the step)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
