"""`dataprep train` / `python -m trainer.train`: the entry points of the trainer.

`main(argv)` parses the flags (trainer/config.py) into a `TrainConfig`; with `--nproc-per-node N`
(default: the TP size when not already under torchrun) it checks the run once (trainer/preflight.py)
and starts N local ranks like `torchrun --standalone` (trainer/launch.py), each running
`train(config)` (trainer/loop.py). Where things live:

    trainer/config.py      TrainConfig, the flags, --model -> GPTConfig / MT5Config / GPTJConfig
    trainer/preflight.py   data and length checks that need no process group
    trainer/loop.py        train(): build, shard, resume, the optimizer step, metrics
    trainer/resume.py      what a run saves besides the weights (step, RNG) and --load
    trainer/memory.py      --dry-run: per-rank memory estimate and its measurement
    trainer/checkpoint.py  sharded checkpoint files, merging and resharding between TP sizes
    trainer/hf.py          Hugging Face export and import, one mapping table per architecture
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from dataprep.errors import DataprepError
from trainer.config import (
    TrainConfig,
    add_arguments,
    build_parser,
    check_tp_layout,
    config_from_args,
    resolve_model_config,
)
from trainer.training.loop import TrainResult, train
from trainer.training.optimizer import lr_at
from trainer.training.preflight import (
    check_batch_sizes,
    check_lengths,
    check_packed_flags,
    check_sequence_parallel,
    inspect_data,
)
from trainer.training.resume import run_model_config

__all__ = [
    "TrainConfig",
    "TrainResult",
    "add_arguments",
    "config_from_args",
    "lr_at",
    "main",
    "resolve_model_config",
    "run",
    "train",
]


# ------------------------------------------------------------------------------------- entry points
def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and train (starting local ranks if asked); an exit code."""
    args = build_parser().parse_args(argv)
    from trainer.launch import dist_env

    if dist_env() is not None:  # a rank started by torchrun
        configure_rank_logging()
    elif not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(config_from_args(args))
    except DataprepError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return e.exit_code


def run(config: TrainConfig) -> int:
    """Train with `config` in this process, or in `nproc_per_node` local ranks it starts."""
    from trainer.launch import dist_env, launch_local

    if config.dry_run:  # before any rank starts or any data is read beyond the manifests
        from trainer.training.memory import dry_run

        return dry_run(config)

    nproc = config.nproc_per_node
    if nproc is None:
        nproc = 1 if dist_env() is not None else config.tensor_model_parallel_size
    if nproc > 1 and dist_env() is None:
        from trainer.launch import check_world

        check_world(nproc, config.tensor_model_parallel_size)
        return launch_local(
            nproc,
            "trainer.train:worker_main",
            config.to_json(),
            threads_per_rank=config.num_threads,
            check=lambda: _validate_before_launch(config, nproc),
        )
    train(config)
    return 0


def worker_main() -> int:
    """Entry point of a rank started by `launch_local`: the config comes from the environment."""
    from trainer.launch import PAYLOAD_ENV

    rank = configure_rank_logging()
    try:
        train(TrainConfig.from_json(os.environ[PAYLOAD_ENV]))
    except DataprepError as e:
        print(f"train: error [rank {rank}]: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


def configure_rank_logging() -> int:
    """Log lines tagged `[rank N]`; INFO from rank 0 only, warnings and errors from every rank."""
    rank = int(os.environ.get("RANK", "0"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    return rank


def _validate_before_launch(config: TrainConfig, nproc: int) -> None:
    """Catch what every rank would reject before starting them (the ranks check again)."""
    from trainer.launch import check_world

    check_batch_sizes(config, check_world(nproc, config.tensor_model_parallel_size))
    info = inspect_data(config)
    kind, model_config, _ = run_model_config(config, info.vocab_size)
    check_tp_layout(kind, model_config, config.tensor_model_parallel_size)
    seq_length = check_lengths(config, kind, model_config)
    check_packed_flags(config, model_config)
    check_sequence_parallel(config, model_config, seq_length)


if __name__ == "__main__":
    sys.exit(main())
