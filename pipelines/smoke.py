"""The end-to-end smoke recipe behind `dataprep smoke`, on the toy corpora in pipelines/toy/.

1. build the Pile-toy index (GPT-2 BPE, --append-eod) and 2. the mC4-toy index (mt5-toy
SentencePiece, --append-eod) into the output directory, printing their summaries; 3. preview two
span-corrupted samples; 4. train a tiny GPT and 5. a tiny mT5 with tensor parallelism 2 (two local
ranks) for a few hundred steps; then report each run's start and end loss against the unigram
entropy of its training data (nats/token, from `np.bincount` of the train split's token ids); 6.
export the GPT with `export-hf` and load it back with transformers' AutoModelForCausalLM, failing
unless its logits equal the checkpoint's within 1e-4. A
model that learned nothing but token frequencies would sit at the unigram entropy; the run fails
unless the end loss (mean of the last 10 steps) is at least `margin` nats below it. `quick=True`
runs a few steps and checks only that training ran and the loss is finite (for tests).

The step counts, batch sizes and learning rates below were tuned so the whole recipe stays under 5
minutes on 2 CPU cores (see pipelines/README.md for the measured times)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.errors import DataprepError

TOY_DIR = Path(__file__).resolve().parent / "toy"


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One training run of the recipe (flags as `dataprep train` takes them)."""

    name: str  # "gpt" or "mt5", also the output sub-directory
    model: str  # preset
    steps: int
    micro_batch_size: int
    lr: float
    min_lr: float
    warmup: int
    seq_length: int  # GPT --seq-length or mT5 --encoder-seq-length


FULL_RUNS = (
    # the GPT-2 head (50304 x 128) is most of a step: 512 tokens per step keep it near 0.4 s
    RunSpec(
        "gpt",
        "gpt-tiny",
        steps=200,
        micro_batch_size=8,
        lr=6e-3,
        min_lr=6e-4,
        warmup=20,
        seq_length=64,
    ),
    # HF's mT5 init (untied head, std 1) starts near 45 nats; a high LR brings it down in time
    RunSpec(
        "mt5",
        "mt5-tiny",
        steps=300,
        micro_batch_size=8,
        lr=1.5e-2,
        min_lr=1e-3,
        warmup=20,
        seq_length=128,
    ),
)
QUICK_STEPS = 6
END_MEAN_STEPS = 10  # the end loss judged: the mean over the last steps (one step's loss is noisy)


@dataclass(frozen=True, slots=True)
class SmokeConfig:
    output: str = "out/smoke"  # everything the recipe writes goes here (replaced on each run)
    quick: bool = False  # a few steps per model, no loss-vs-entropy verdict
    tensor_parallel: int = 2
    workers: int = 2  # tokenizer processes for the index builds
    margin: float = 0.5  # end loss must be this many nats below the unigram entropy
    progress: bool = True

    def __post_init__(self) -> None:
        """Flag mistakes are caught here, before the recipe replaces anything under `output`."""
        from dataprep.errors import UsageError

        for flag, value in (("--tensor-model-parallel-size", self.tensor_parallel),
                            ("--workers", self.workers)):  # fmt: skip
            if value < 1:
                raise UsageError(f"{flag} must be >= 1, got {value}")


@dataclass
class RunReport:
    name: str
    model: str
    steps: int
    start_loss: float
    end_loss: float
    unigram_entropy: float
    seconds: float
    tokens_per_s: float
    passed: bool | None  # None in quick mode

    def line(self) -> str:
        verdict = {True: "ok", False: "FAILED", None: "not judged (--quick)"}[self.passed]
        last = min(END_MEAN_STEPS, self.steps)
        return (
            f"{self.name:4s} {self.model:9s} {self.steps:4d} steps  "
            f"loss: step 1 {self.start_loss:6.3f}, mean of last {last} {self.end_loss:6.3f}  "
            f"unigram entropy {self.unigram_entropy:6.3f} "
            f"({self.end_loss - self.unigram_entropy:+.2f})  {self.seconds:5.1f} s  "
            f"{self.tokens_per_s:8,.0f} tok/s  {verdict}"
        )


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the token frequency distribution: -sum p log p with p = bincount / n."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64))
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def train_split_tokens(prefix: str, split: str) -> np.ndarray:
    """The token ids of the train part of `split`, by documents (as the T5 loader splits)."""
    from dataprep.indexed import IndexedDatasetReader
    from trainer.training.data import split_bounds

    reader = IndexedDatasetReader(prefix)
    beg, end = split_bounds(split, reader.num_documents, 0)
    if end <= beg:
        return np.zeros(0, dtype=np.int64)
    parts = [reader.get_document(d) for d in range(beg, end)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def export_and_reload(checkpoint: Path, folder: Path, prefix: str) -> str:
    """Export the checkpoint as an HF folder, load it with AutoModelForCausalLM alone and compare
    its logits with ours on the first 64 tokens of the dataset; DataprepError above 1e-4."""
    import torch
    import transformers

    from dataprep.indexed import IndexedDatasetReader
    from trainer.checkpoint import load_model
    from trainer.checkpoint.hf import export_hf

    summary = export_hf(checkpoint, folder, overwrite=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ours = load_model(checkpoint)
    ids = torch.from_numpy(IndexedDatasetReader(prefix).get(0)[:64].astype(np.int64))[None]
    with torch.no_grad():
        diff = float(
            (ours(ids)[..., : ours.config.vocab_size] - hf(input_ids=ids).logits).abs().max()
        )
    if diff > 1e-4:
        raise DataprepError(
            f"{folder}: transformers' {type(hf).__name__} gives logits {diff:.2e} away from the "
            f"checkpoint's (limit 1e-4): the export is wrong"
        )
    return (
        f"{folder}: {type(hf).__name__} ({summary.params:,} parameters) loaded by "
        f"AutoModelForCausalLM; logits on 64 data tokens within {diff:.1e} of the checkpoint's"
    )


def run_smoke(config: SmokeConfig, *, out: Callable[[str], None] = print) -> list[RunReport]:
    """Run the recipe; DataprepError if a stage fails or a model did not learn."""
    from dataprep.build import BuildConfig, build_index
    from dataprep.cli import main as cli_main
    from trainer.train import TrainConfig
    from trainer.train import run as train_run
    from trainer.training.metrics import read_metrics

    t_start = time.perf_counter()
    output = Path(config.output)
    previous = [output / sub for sub in ("data", "gpt", "mt5") if (output / sub).exists()]
    if previous:  # only our own outputs are replaced, and the user is told
        out(f"replacing the previous run's {', '.join(str(p) for p in previous)}")
    for path in previous:
        shutil.rmtree(path)
    (output / "data").mkdir(parents=True, exist_ok=True)
    split = "969,30,1"
    stages = 6

    def header(i: int, text: str) -> None:
        out(f"\n== [{i}/{stages}] {text} (at {time.perf_counter() - t_start:.0f} s)")
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdout.flush()

    builds = {
        "gpt": ("Pile-toy, GPT-2 BPE", TOY_DIR / "pile", "pile", "gpt2"),
        "mt5": ("mC4-toy, mt5-toy SentencePiece", TOY_DIR / "mc4", "mc4", "mt5-toy"),
    }
    prefixes: dict[str, str] = {}
    for i, (name, (what, inputs, stem, tokenizer)) in enumerate(builds.items(), start=1):
        header(i, f"build-index: {what} -> {output / 'data' / stem}_text_document")
        if not inputs.is_dir():
            raise DataprepError(
                f"the toy corpus {inputs} is missing: run `dataprep smoke` from a "
                "source checkout of the repository"
            )
        summary = build_index(
            BuildConfig(
                inputs=(str(inputs),),
                output_prefix=str(output / "data" / stem),
                tokenizer=tokenizer,
                append_eod=True,
                workers=config.workers,
                overwrite=True,
                progress=config.progress,
            )
        )
        out(summary.format())
        prefixes[name] = summary.outputs["text"]

    header(3, "preview-masking: 2 span-corrupted mC4-toy samples (encoder length 128)")
    code = cli_main(
        ["preview-masking", prefixes["mt5"], "--num-samples", "2", "--seq-length", "128"]
    )
    if code != 0:
        raise DataprepError(f"preview-masking failed with exit code {code}")

    reports = []
    for i, spec in enumerate(FULL_RUNS, start=4):
        steps = QUICK_STEPS if config.quick else spec.steps
        header(
            i,
            f"train {spec.model}, TP={config.tensor_parallel}, {steps} steps on "
            f"{prefixes[spec.name]}",
        )
        run_dir = output / spec.name
        metrics = run_dir / "metrics.jsonl"
        lengths = (
            {"seq_length": spec.seq_length}
            if spec.name == "gpt"
            else {"encoder_seq_length": spec.seq_length}
        )
        train_config = TrainConfig(
            data_path=(prefixes[spec.name],),
            model=spec.model,
            split=split,
            **lengths,
            micro_batch_size=spec.micro_batch_size,
            tensor_model_parallel_size=config.tensor_parallel,
            nproc_per_node=config.tensor_parallel,
            train_iters=steps,
            lr=spec.lr,
            min_lr=spec.min_lr,
            lr_warmup_iters=min(spec.warmup, steps // 2),
            seed=1234,
            save=str(run_dir / "checkpoint"),
            metrics=str(metrics),
            progress=config.progress,
            log_interval=max(1, steps // 10),
        )
        t0 = time.perf_counter()
        code = train_run(train_config)
        seconds = time.perf_counter() - t0
        if code != 0:
            raise DataprepError(f"training {spec.model} failed with exit code {code}")
        records = [r for r in read_metrics(metrics) if "loss" in r]
        if len(records) != steps:
            raise DataprepError(f"{metrics}: expected {steps} steps, found {len(records)}")
        losses = [r["loss"] for r in records]
        h = unigram_entropy(train_split_tokens(prefixes[spec.name], split))
        end = float(np.mean(losses[-END_MEAN_STEPS:]))
        finite = all(math.isfinite(x) for x in losses)
        passed = None if config.quick else (finite and end <= h - config.margin)
        tps = float(np.median([r["tokens_per_s"] for r in records[1:]] or [0.0]))
        rep = RunReport(spec.name, spec.model, steps, losses[0], end, h, seconds, tps, passed)
        out(rep.line())
        out(
            f"metrics {metrics}, loss curve {metrics.with_suffix('.png')}, "
            f"checkpoint {run_dir / 'checkpoint'}"
        )
        if not finite:
            raise DataprepError(f"training {spec.model}: the loss is not finite: {losses[-3:]}")
        reports.append(rep)

    gpt_ckpt = output / "gpt" / "checkpoint"
    header(6, f"export-hf: {gpt_ckpt} -> {output / 'gpt' / 'hf'}, loaded back with transformers")
    out(export_and_reload(gpt_ckpt, output / "gpt" / "hf", prefixes["gpt"]))

    out(f"\n== summary ({time.perf_counter() - t_start:.0f} s in total)")
    for rep in reports:
        out(rep.line())
    failed = [r for r in reports if r.passed is False]
    if failed:
        raise DataprepError(
            "end loss not at least "
            f"{config.margin} nats below the unigram entropy for "
            + ", ".join(f"{r.model} ({r.end_loss:.3f} vs {r.unigram_entropy:.3f})" for r in failed)
            + ": the models did not learn more than token frequencies"
        )
    return reports


def config_with(**kw: Any) -> SmokeConfig:
    return dataclasses.replace(SmokeConfig(), **kw)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="out/smoke")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    try:
        run_smoke(SmokeConfig(output=a.output, quick=a.quick))
    except DataprepError as e:
        print(f"smoke: error: {e}", file=sys.stderr)
        sys.exit(1)
