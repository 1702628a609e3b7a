"""The training loop: `train(config)` = setup, the steps, finish.

`train(config)` runs on one rank (joining the launched group when there is one): the checks that
need no other rank (trainer/training/preflight.py), then setup (the data source of source.py, the
model built from its config with the same seed on every rank and sharded by trainer/parallel/, the
optimizer, the resume from a checkpoint if asked, the metrics and progress outputs of
reporting.py), the steps (step.py's forward and backward over the micro-batches and
trainer/training/optimizer.py's step, metrics, checkpoints) and finish (outputs closed, the loss
curve drawn, the process group left). The loss of a step is the mean over every target token of
the global batch; the data position is the step, so a resumed run sees exactly the batches the
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import DataConfigError
from trainer.config import TrainConfig, check_tp_layout
from trainer.training.optimizer import lr_at, optimizer_for
from trainer.training.preflight import (
    DataInfo,
    check_batch_sizes,
    check_lengths,
    check_packed_flags,
    check_sequence_parallel,
    inspect_data,
)
from trainer.training.reporting import (
    _log_start,
    _log_summary,
    _open_outputs,
    _report_step,
    model_label,
)
from trainer.training.resume import (
    load_training_checkpoint,
    run_model_config,
    save_training_checkpoint,
)
from trainer.training.rng import seed_everything
from trainer.training.source import _build_source
from trainer.training.step import _train_step

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    kind: str
    start_step: int  # steps done before this run (resume point)
    end_step: int  # steps done at the end
    losses: list[float] = field(
        default_factory=list
    )  # per step of this run (rank 0's view = global)
    tokens_per_s: float = 0.0  # median over this run's steps after the first
    data_wait_share: float = 0.0  # time waiting for data / loop time
    seconds: float = 0.0
    metrics_path: str | None = None
    loss_curve_path: str | None = None


@dataclass(frozen=True)
class _Checked:
    """What the checks before any collective found."""

    env: Any  # trainer.launch.DistEnv, None outside a launched group
    info: DataInfo
    kind: str  # "gpt" or "mt5"
    model_config: Any
    resume: str | None  # the checkpoint to resume from
    seq_length: int


@dataclass
class _Run:
    """What setup builds and the steps use."""

    config: TrainConfig
    kind: str
    model_config: Any
    layout: Any
    model: Any
    optimizer: Any
    loader: Any
    autocast: Any
    tokens_per_step: int
    start_step: int
    end_step: int
    tokenizer_spec: str | None
    metrics: Any = None
    bar: Any = None


def train(config: TrainConfig) -> TrainResult:
    """Train on this rank (joining the launched group when there is one); raises DataprepError."""
    from trainer.launch import setup_distributed

    checked = _check(config)
    _set_num_threads(config, checked.env)
    layout = setup_distributed(
        config.tensor_model_parallel_size,
        timeout_s=config.distributed_timeout_minutes * 60,
        env=checked.env,
    )
    result = TrainResult(checked.kind, 0, 0)
    finished = False
    try:
        with contextlib.ExitStack() as outputs:  # closed before the loss curve is drawn
            run = _setup(config, checked, layout, result, outputs)
            _steps(run, result)
        finished = True
    finally:
        _finish(config, layout, result, finished=finished)
    if layout.is_main:
        _log_summary(config, result)
    return result


# ------------------------------------------------------------------------------------------ checks
def _check(config: TrainConfig) -> _Checked:
    """Every check that needs no other rank, before any collective."""
    from trainer.launch import check_world, dist_env

    tp = config.tensor_model_parallel_size
    env = dist_env()
    check_batch_sizes(config, check_world(env.world_size if env else 1, tp))
    info = inspect_data(config)
    kind, model_config, resume = run_model_config(config, info.vocab_size)
    check_tp_layout(kind, model_config, tp)
    check_packed_flags(config, model_config)
    if info.vocab_size is None:
        log.warning(
            "the dataset has no manifest naming its tokenizer; trusting the model's vocab_size %d",
            model_config.vocab_size,
        )
    if info.max_token_id is not None and info.max_token_id >= model_config.vocab_size:
        raise DataConfigError(
            f"{{data_path}} holds token id {info.max_token_id} but the model's vocabulary "
            f"is {model_config.vocab_size}: use a model for this tokenizer",
            "data_path",
        )
    seq_length = check_lengths(config, kind, model_config)
    check_sequence_parallel(config, model_config, seq_length)
    return _Checked(env, info, kind, model_config, resume, seq_length)


def _set_num_threads(config: TrainConfig, env: Any) -> None:
    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    elif env is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, env.local_world_size)))


# ------------------------------------------------------------------------------------------- setup
def _setup(
    config: TrainConfig,
    checked: _Checked,
    layout: Any,
    result: TrainResult,
    outputs: contextlib.ExitStack,
) -> _Run:
    """The data source, the model (sharded), the optimizer, the resume point, the outputs and the
    batch loader; `outputs` closes what needs closing."""
    import torch

    from trainer.training.data import BatchLoader

    kind, model_config = checked.kind, checked.model_config
    gbs = config.global_batch_size or config.micro_batch_size * layout.dp_size
    source = _build_source(
        config, kind, checked.info, checked.seq_length, config.train_iters * gbs, layout
    )

    model, optimizer, start_step = _model_and_optimizer(config, checked, layout)
    end_step = config.train_iters
    if start_step >= end_step:
        log.info(
            "checkpoint %s is already at step %d of --train-iters %d; nothing to do",
            checked.resume,
            start_step,
            end_step,
        )
    result.start_step = result.end_step = start_step

    tokens_per_sample = (
        checked.seq_length if kind == "gpt" else config.encoder_seq_length + source.decoder_length
    )
    # --bf16: the forward in bf16 autocast (CPU too); weights, gradients, their reduction,
    # AdamW and the loss stay fp32, so the fp32 weights are the master copy
    autocast = (
        torch.autocast(layout.device.type, dtype=torch.bfloat16)
        if config.bf16
        else contextlib.nullcontext()
    )
    run = _Run(
        config, kind, model_config, layout, model, optimizer, loader=None, autocast=autocast,
        tokens_per_step=gbs * tokens_per_sample, start_step=start_step, end_step=end_step,
        tokenizer_spec=checked.info.tokenizer_spec,
    )  # fmt: skip
    if layout.is_main:
        _log_start(run, gbs)
        _open_outputs(run, result, outputs)
    run.loader = BatchLoader(
        source,
        start_step=start_step,
        end_step=end_step,
        micro_batch_size=config.micro_batch_size,
        global_batch_size=gbs,
        dp_rank=layout.dp_rank,
        dp_size=layout.dp_size,
    )
    outputs.callback(run.loader.close)
    return run


def _model_and_optimizer(config: TrainConfig, checked: _Checked, layout: Any) -> tuple:
    """(model sharded on this rank, its optimizer, the step to start from), resumed if asked."""
    from trainer import parallel
    from trainer.models import build_model

    seed_everything(config.seed)  # identical full weights on every rank before sharding
    model = build_model(checked.model_config)
    model = parallel.parallelize(
        model,
        layout.tp_group,
        dropout_seed=config.seed + 1009 * layout.dp_rank,
        sequence_parallel=config.sequence_parallel,
        recompute_granularity=config.recompute_granularity,
    )
    model.to(layout.device)
    optimizer = optimizer_for(model, config, layout)
    # dropout: the same stream on the TP ranks of one DP rank, different across DP ranks
    seed_everything(config.seed + 1 + 1009 * layout.dp_rank)
    start_step = 0
    if checked.resume is not None:
        start_step = load_training_checkpoint(checked.resume, model, optimizer, layout, parallel)
    return model, optimizer, start_step


# ------------------------------------------------------------------------------------------- steps
def _steps(run: _Run, result: TrainResult) -> None:
    """The optimizer steps from the resume point to --train-iters (or --exit-interval)."""
    import numpy as np

    config, loader = run.config, run.loader
    decay_iters = config.lr_decay_iters or config.train_iters
    params = [p for p in run.model.parameters() if p.requires_grad]
    rates, t_loop = [], time.perf_counter()
    wait_before = 0.0
    step_t0 = time.perf_counter()
    for batches in loader:
        step = batches.step
        lr = lr_at(
            step,
            lr=config.lr,
            min_lr=config.min_lr,
            warmup_iters=config.lr_warmup_iters,
            decay_iters=decay_iters,
        )
        loss, grad_norm = _train_step(
            run.model,
            run.optimizer,
            batches.micro_batches,
            params,
            kind=run.kind,
            layout=run.layout,
            autocast=run.autocast,
            lr=lr,
            clip=config.clip_grad,
            vocab_size=run.model_config.vocab_size,
        )
        now = time.perf_counter()
        dt, step_t0 = now - step_t0, now
        wait = loader.wait_s - wait_before
        wait_before = loader.wait_s
        done = step + 1
        result.losses.append(loss)
        result.end_step = done
        if not math.isfinite(loss):
            raise DataConfigError(
                f"step {done}: the loss is {loss}; lower {{lr}} or check the data", "lr"
            )
        tps = run.tokens_per_step / dt if dt > 0 else 0.0
        if step > run.start_step:
            rates.append(tps)
        if run.layout.is_main:
            _report_step(run, {"step": done, "loss": loss, "lr": lr, "tokens_per_s": tps,
                               "grad_norm": grad_norm, "step_time_s": dt, "data_wait_s": wait,
                               "tokens": done * run.tokens_per_step})  # fmt: skip
        if _save_and_stop(run, done):
            break
    loop_s = time.perf_counter() - t_loop
    result.seconds = loop_s
    result.tokens_per_s = float(np.median(rates)) if rates else 0.0
    result.data_wait_share = loader.wait_s / loop_s if loop_s > 0 else 0.0


def _save_and_stop(run: _Run, done: int) -> bool:
    """Save a checkpoint when one is due after step `done`; True when --exit-interval stops here."""
    from trainer import parallel

    config = run.config
    last = done == run.end_step
    exiting = bool(config.exit_interval and done % config.exit_interval == 0)
    if config.save and (
        last or exiting or (config.save_interval and done % config.save_interval == 0)
    ):
        save_training_checkpoint(
            config,
            run.model,
            run.optimizer,
            run.layout,
            done,
            run.kind,
            run.model_config,
            parallel,
            tokenizer=run.tokenizer_spec,
        )
    if exiting and not last:
        log.info("--exit-interval %d: stopping after step %d", config.exit_interval, done)
        return True
    return False


# ------------------------------------------------------------------------------------------ finish
def _finish(config: TrainConfig, layout: Any, result: TrainResult, *, finished: bool) -> None:
    """The loss curve of a finished run, then the process group left (all of this rank's work is
    done once teardown starts)."""
    from trainer.launch import teardown_distributed

    try:
        if finished and layout.is_main and config.metrics and result.end_step > 0:
            from trainer.training.metrics import plot_loss_curve, read_metrics

            png = config.loss_curve or str(Path(config.metrics).with_suffix(".png"))
            out = plot_loss_curve(
                [r for r in read_metrics(config.metrics) if "loss" in r],
                png,
                title=f"{model_label(config)} TP={config.tensor_model_parallel_size}",
            )
            result.loss_curve_path = str(out) if out else None
    finally:
        teardown_distributed(layout)
