"""`dataprep smoke`: the end-to-end recipe on the shipped toy corpora (pipelines/smoke.py)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from dataprep.errors import DataprepError

HELP = "end to end on the toy corpora: build, preview masking, train tiny GPT and mT5 at TP=2"
DESCRIPTION = """\
The main command: on the Pile-format and mC4-format toy corpora shipped in pipelines/toy/,
  1. build the Pile-toy index (GPT-2 BPE, --append-eod) and 2. the mC4-toy index (mt5-toy),
  3. preview two span-corrupted samples,
  4. train a tiny GPT and 5. a tiny mT5 with tensor parallelism 2 (two local ranks, gloo on CPU),
and report each model's start and end loss against the unigram entropy of its training data. Exits
non-zero unless both end losses are well below the unigram entropy. About 2-4 minutes on 2 CPU
cores. Outputs (indices, metrics JSONL, loss-curve PNGs, checkpoints) go to --output, replacing the
previous run's.

examples:
  dataprep smoke
  dataprep smoke --output /tmp/smoke --quick   # a few steps per model: checks the plumbing only"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="out/smoke", help="output directory (default: out/smoke)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="train a few steps per model, skip the loss-vs-entropy verdict (for tests)",
    )
    p.add_argument(
        "--tensor-model-parallel-size",
        type=int,
        default=2,
        help="TP size of both training runs (default 2; that many local ranks start)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="tokenizer processes for the builds (default 2)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _load_recipe():
    """pipelines/smoke.py of the source checkout this package runs from."""
    path = Path(__file__).resolve().parents[2] / "pipelines" / "smoke.py"
    if not path.is_file():
        raise DataprepError(
            f"{path} not found: `dataprep smoke` runs from a source checkout "
            "(pip install -e .), which holds the recipe and the toy corpora"
        )
    spec = importlib.util.spec_from_file_location("dataprep_smoke_recipe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    recipe = _load_recipe()
    config = recipe.SmokeConfig(
        output=args.output,
        quick=args.quick,
        tensor_parallel=args.tensor_model_parallel_size,
        workers=args.workers,
        progress=args.progress,
    )
    recipe.run_smoke(config, out=lambda s: print(s, flush=True))
    return 0
