"""The trainer's entry point: `run(config)`, which `dataprep train` calls with the `TrainConfig` it
makes from its flags (dataprep/commands/train.py). `python -m trainer.train ARGS` is the same
command as `dataprep train ARGS` (e.g. under `torchrun -m trainer.train`).

With `nproc_per_node` N (default: the TP size when not already under torchrun) `run` checks the
run once (trainer/training/preflight.py) and starts N local ranks like `torchrun --standalone`
(trainer/launch.py), each running `train(config)` (trainer/training/loop.py). Where things live:

    trainer/config.py     TrainConfig, `model` -> GPTConfig / MT5Config / GPTJConfig
    trainer/models/       the models and the one Architecture registry
    trainer/parallel/     tensor / sequence parallelism, recompute, gradient reduction
    trainer/training/     train() (loop.py), optimizer, data, preflight, resume, --dry-run memory
    trainer/checkpoint/   sharded checkpoint files, resharding; HF / Megatron / NeMo conversion
    trainer/inference/    loading a checkpoint, generate, serve, fill-mask, eval
"""

from __future__ import annotations

import sys

from trainer.config import (
    TrainConfig,
    check_tp_layout,
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
    "lr_at",
    "resolve_model_config",
    "run",
    "train",
]


# ------------------------------------------------------------------------------------- entry points
def run(config: TrainConfig) -> int:
    """Train with `config` in this process, or in `nproc_per_node` local ranks it starts."""
    from trainer.launch import dist_env, launch_local

    if config.dry_run:  # before any rank starts or any data is read beyond the manifests
        from trainer.training.dry_run import dry_run

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
            report_errors=True,
        )
    train(config)
    return 0


def worker_main() -> int:
    """Entry point of a rank started by `launch_local`: the config is its payload."""
    from trainer.launch import rank_main

    return rank_main(_train_rank, name="train")


def _train_rank(payload: str) -> int:
    train(TrainConfig.from_json(payload))
    return 0


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


if __name__ == "__main__":  # `python -m trainer.train ARGS` is `dataprep train ARGS`
    # run as the program itself, not imported: the trainer's modules never import the CLI
    import runpy

    sys.argv = ["dataprep", "train", *sys.argv[1:]]
    runpy.run_module("dataprep", run_name="__main__")
