"""`dataprep eval CKPT`: split perplexity on a .bin/.idx dataset and LAMBADA accuracy
(trainer/inference/evaluate.py); lm-evaluation-harness through
trainer/inference/lm_eval_model.py."""

from __future__ import annotations

import argparse
import json
import os

HELP = "evaluate a GPT / GPT-J checkpoint: perplexity on a dataset split, LAMBADA accuracy"
DESCRIPTION = """\
--data-path PREFIX: mean loss (nats per token) and perplexity over exactly the windows
megatron-core's GPTDataset serves for one split (--split valid|test|train) of an indexed dataset,
one epoch. --seq-length, --split-weights (Megatron's --split string) and --seed default to the
training run's, so `--split valid` is that run's validation set.

--lambada FILE.jsonl: lm-evaluation-harness's lambada_openai metrics on a local file of {"text"}
records (acc: the last word is the greedy continuation; perplexity of the last word), without
lm_eval installed.

--tasks NAMES: lm-evaluation-harness itself (pip install 'dataprep[eval]') runs the tasks on this
checkpoint, looked up in --include-path folders (default: the shipped pipelines/lm_eval_tasks, with
toy_lambada) and then among lm_eval's own; its table, or its metrics under "lm_eval" with --json.
The same model class serves lm_eval's own command line:
  python -m trainer.inference.lm_eval_model --model dataprep --model_args checkpoint=CKPT \\
      --tasks toy_lambada --include_path pipelines/lm_eval_tasks

examples:
  dataprep eval out/ckpt-gpt --data-path out/pile_text_document --split valid
  dataprep eval out/ckpt-gpt --data-path out/pile_text_document --split test --seq-length 128
  dataprep eval out/ckpt-gpt --lambada pipelines/lm_eval_tasks/toy_lambada.jsonl --json
  dataprep eval out/ckpt-gpt --tasks toy_lambada --limit 100"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="GPT / GPT-J checkpoint or --save root")
    p.add_argument("--data-path", metavar="PREFIX", help="indexed dataset to score")
    p.add_argument("--split", default="valid", choices=("train", "valid", "test"),
                   help="which split of --data-path (valid)")  # fmt: skip
    p.add_argument("--split-weights", help="Megatron's --split, e.g. 969,30,1 (default: the run's)")
    p.add_argument("--seq-length", type=int, help="window length (default: the run's)")
    p.add_argument("--seed", type=int, help="GPTDataset shuffle seed (default: the run's)")
    p.add_argument("--max-windows", type=int, help="score only the first N windows of the split")
    p.add_argument("--lambada", metavar="FILE", help='LAMBADA JSONL ({"text": ...} per line)')
    p.add_argument("--tasks", help="lm-evaluation-harness tasks, comma-separated (needs lm_eval: "
                   "pip install 'dataprep[eval]'), e.g. toy_lambada")  # fmt: skip
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="folder of lm_eval task YAMLs, searched before lm_eval's own (repeatable; "
                   "default: the shipped pipelines/lm_eval_tasks)")  # fmt: skip
    p.add_argument("--num-fewshot", type=int, help="lm_eval few-shot examples (the task's default)")
    p.add_argument("--limit", type=int, help="score only the first N records (--lambada, --tasks)")
    p.add_argument("--batch-size", type=int, default=8, help="windows / records per forward (8)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the one recorded in CKPT)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dataprep.errors import UsageError

    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    if not args.data_path and not args.lambada and not args.tasks:
        raise UsageError(
            "nothing to evaluate: pass --data-path PREFIX, --lambada FILE and/or --tasks NAMES"
        )
    tasks, include = _lm_eval_tasks(args) if args.tasks else ([], [])
    for name in ("seq_length", "max_windows", "limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.data_path:
        from dataprep.indexed.reader import check_dataset_files

        check_dataset_files(args.data_path)
    from trainer.inference.evaluate import lambada, split_perplexity, train_defaults
    from trainer.inference.loading import load_for_inference

    model, tok, ckpt = load_for_inference(args.checkpoint, tokenizer=args.tokenizer)
    results: dict = {"checkpoint": ckpt}
    if args.data_path:
        run_cfg = train_defaults(ckpt)
        seq = args.seq_length or run_cfg.get("seq_length")
        if seq is None:
            raise UsageError(f"{ckpt} does not record its --seq-length; pass --seq-length")
        r = split_perplexity(
            model, args.data_path, split_name=args.split, seq_length=seq,
            split=args.split_weights or run_cfg.get("split", "969,30,1"),
            seed=args.seed if args.seed is not None else run_cfg.get("seed", 1234),
            batch_size=args.batch_size, max_windows=args.max_windows, progress=args.progress,
        )  # fmt: skip
        results["split"] = {"data_path": args.data_path, "split": r.split, "windows": r.windows,
                            "seq_length": seq, "tokens": r.tokens, "mean_loss": r.mean_loss,
                            "perplexity": r.perplexity}  # fmt: skip
        if not args.json:
            print(f"{args.data_path} {r.split}: {r.windows:,} windows of {seq}+1 tokens, "
                  f"{r.tokens:,} predictions; mean loss {r.mean_loss:.4f} nats, "
                  f"perplexity {r.perplexity:.2f}")  # fmt: skip
    if args.lambada:
        r = lambada(model, tok, args.lambada, batch_size=args.batch_size, limit=args.limit)
        results["lambada"] = {"file": args.lambada, "records": r.records, "acc": r.acc,
                              "perplexity": r.perplexity}  # fmt: skip
        if not args.json:
            print(f"{args.lambada}: {r.records:,} records; acc {r.acc:.4f}, "
                  f"perplexity {r.perplexity:.2f}")  # fmt: skip
    if tasks:
        from trainer.inference.lm_eval_model import run_tasks

        out = run_tasks((model, tok, ckpt), tasks, include_paths=include, limit=args.limit,
                        num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                        progress=args.progress)  # fmt: skip
        results["lm_eval"] = {
            task: {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            for task, metrics in out["results"].items()
        }
        if not args.json:
            from lm_eval.utils import make_table

            print(make_table(out).rstrip())
    if args.json:
        print(json.dumps(results))
    return 0


def _lm_eval_tasks(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(task names, include paths) of --tasks / --include-path, checked before the model loads."""
    from pathlib import Path

    from dataprep.errors import UsageError, require_extra

    require_extra("lm_eval", "--tasks", "eval")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UsageError(f"--tasks {args.tasks!r}: no task name")
    include = list(args.include_path)
    for path in include:
        if not os.path.isdir(path):
            raise UsageError(f"--include-path {path}: no such directory")
    shipped = Path(__file__).resolve().parents[2] / "pipelines" / "lm_eval_tasks"
    if not include and shipped.is_dir():
        include = [str(shipped)]
    return tasks, include
