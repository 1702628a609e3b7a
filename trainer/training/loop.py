"""The training loop: AdamW, linear warmup then cosine decay, TP-aware clipping, accumulation.

`train(config)` runs on one rank (joining the launched group when there is one): it checks the
run (trainer/training/preflight.py), builds the model from its config with the same seed on every
rank, shards it (trainer/parallel/), resumes from a checkpoint if asked (trainer/checkpoint/) and
trains. The loss of a step is the mean over every target token of the global batch; the data
position is the step, so a resumed run sees exactly the batches the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError, UsageError
from trainer.config import DEFAULT_MODEL, TrainConfig, check_tp_layout
from trainer.loss import cross_entropy
from trainer.training.preflight import (
    DataInfo,
    check_batch_sizes,
    check_lengths,
    check_packed_flags,
    check_sequence_parallel,
    inspect_data,
)
from trainer.training.resume import (
    load_training_checkpoint,
    run_model_config,
    save_training_checkpoint,
)
from trainer.training.rng import seed_everything

log = logging.getLogger("trainer.train")


# ----------------------------------------------------------------------------------------- schedule
def model_label(config: TrainConfig) -> str:
    """--model as given, or what None means for this run."""
    if config.model:
        return config.model
    return "the --load checkpoint's model" if config.load else DEFAULT_MODEL


def lr_at(step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """LR of 0-based step `step`: lr*(step+1)/warmup during warmup, then cosine from lr to min_lr.

    E.g. lr 1e-3, min 1e-4, warmup 10, decay 110: step 0 -> 1e-4, step 9 -> 1e-3, step 60 -> 5.5e-4,
    step >= 110 -> 1e-4.
    """
    if warmup_iters > 0 and step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    span = max(1, decay_iters - warmup_iters)
    progress = min(1.0, max(0.0, (step - warmup_iters) / span))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------- the loop
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


def train(config: TrainConfig) -> TrainResult:
    """Train on this rank (joining the launched group when there is one); raises DataprepError."""
    import numpy as np
    import torch

    from trainer import parallel
    from trainer.launch import check_world, dist_env, setup_distributed, teardown_distributed
    from trainer.models import build_model
    from trainer.training.data import BatchLoader

    tp = config.tensor_model_parallel_size
    env = dist_env()
    check_batch_sizes(config, check_world(env.world_size if env else 1, tp))
    # every check that needs no other rank, before any collective
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
        raise DataprepError(
            f"--data-path holds token id {info.max_token_id} but the model's vocabulary "
            f"is {model_config.vocab_size}: use a model for this tokenizer"
        )
    seq_length = check_lengths(config, kind, model_config)
    check_sequence_parallel(config, model_config, seq_length)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    elif env is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, env.local_world_size)))
    layout = setup_distributed(tp, timeout_s=config.distributed_timeout_minutes * 60, env=env)
    result = TrainResult(kind, 0, 0)
    loader = None
    bar = None
    metrics = None
    finished = False
    redirect = contextlib.ExitStack()
    try:
        gbs = config.global_batch_size or config.micro_batch_size * layout.dp_size
        num_samples = config.train_iters * gbs
        source = _build_source(config, kind, info, seq_length, num_samples, layout)

        seed_everything(config.seed)  # identical full weights on every rank before sharding
        model = build_model(model_config)
        model = parallel.parallelize(
            model,
            layout.tp_group,
            dropout_seed=config.seed + 1009 * layout.dp_rank,
            sequence_parallel=config.sequence_parallel,
            recompute_granularity=config.recompute_granularity,
        )
        model.to(layout.device)
        optimizer = _make_optimizer(model, config, layout)
        # dropout: the same stream on the TP ranks of one DP rank, different across DP ranks
        seed_everything(config.seed + 1 + 1009 * layout.dp_rank)

        start_step = 0
        if resume is not None:
            start_step = load_training_checkpoint(resume, model, optimizer, layout, parallel)
        end_step = config.train_iters
        if start_step >= end_step:
            log.info(
                "checkpoint %s is already at step %d of --train-iters %d; nothing to do",
                resume,
                start_step,
                end_step,
            )
        result.start_step = result.end_step = start_step

        tokens_per_sample = (
            seq_length if kind == "gpt" else config.encoder_seq_length + source.decoder_length
        )
        tokens_per_step = gbs * tokens_per_sample
        if layout.is_main:
            # a TP-sharded parameter (tp_dim set) is 1/tp of the whole; replicated ones count once
            n_params = sum(
                p.numel() * (tp if getattr(p, "tp_dim", None) is not None else 1)
                for p in model.parameters()
            )
            log.info(
                "%s %s (~%.1fM parameters), TP=%d DP=%d, global batch %d (micro %d, "
                "accumulation %d),"
                " %d tokens/step, steps %d..%d",
                kind,
                model_label(config),
                n_params / 1e6,
                tp,
                layout.dp_size,
                gbs,
                config.micro_batch_size,
                gbs // (config.micro_batch_size * layout.dp_size),
                tokens_per_step,
                start_step,
                end_step,
            )
            if config.metrics:
                from trainer.training.metrics import MetricsWriter

                metrics = MetricsWriter(config.metrics, resume_from=start_step)
            bar = _progress_bar(config, start_step, end_step, kind)
            if bar is not None:  # log lines (checkpoints) above the bar, never glued onto it
                from tqdm.contrib.logging import logging_redirect_tqdm

                redirect.enter_context(logging_redirect_tqdm())

        loader = BatchLoader(
            source,
            start_step=start_step,
            end_step=end_step,
            micro_batch_size=config.micro_batch_size,
            global_batch_size=gbs,
            dp_rank=layout.dp_rank,
            dp_size=layout.dp_size,
        )
        # --bf16: the forward in bf16 autocast (CPU too); weights, gradients, their reduction,
        # AdamW and the loss stay fp32, so the fp32 weights are the master copy
        autocast = (
            torch.autocast(layout.device.type, dtype=torch.bfloat16)
            if config.bf16
            else contextlib.nullcontext()
        )
        decay_iters = config.lr_decay_iters or config.train_iters
        params = [p for p in model.parameters() if p.requires_grad]
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
                model,
                optimizer,
                batches.micro_batches,
                params,
                kind=kind,
                layout=layout,
                autocast=autocast,
                lr=lr,
                clip=config.clip_grad,
                vocab_size=model_config.vocab_size,
                parallel=parallel,
            )
            now = time.perf_counter()
            dt, step_t0 = now - step_t0, now
            wait = loader.wait_s - wait_before
            wait_before = loader.wait_s
            done = step + 1
            result.losses.append(loss)
            result.end_step = done
            if not math.isfinite(loss):
                raise DataprepError(
                    f"step {done}: the loss is {loss}; lower --lr or check the data"
                )
            tps = tokens_per_step / dt if dt > 0 else 0.0
            if step > start_step:
                rates.append(tps)
            if layout.is_main:
                rec = {
                    "step": done,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": tps,
                    "grad_norm": grad_norm,
                    "step_time_s": dt,
                    "data_wait_s": wait,
                    "tokens": done * tokens_per_step,
                }
                if metrics:
                    metrics.write(rec)
                if bar is not None:
                    bar.set_postfix_str(
                        f"loss {loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s", refresh=False
                    )
                    bar.update(1)
                elif done % config.log_interval == 0 or done == end_step:
                    log.info(
                        "step %d/%d loss %.4f lr %.3e %.0f tokens/s", done, end_step, loss, lr, tps
                    )
            last = done == end_step
            exiting = bool(config.exit_interval and done % config.exit_interval == 0)
            if config.save and (
                last or exiting or (config.save_interval and done % config.save_interval == 0)
            ):
                save_training_checkpoint(
                    config,
                    model,
                    optimizer,
                    layout,
                    done,
                    kind,
                    model_config,
                    parallel,
                    tokenizer=info.tokenizer_spec,
                )
            if exiting and not last:
                log.info("--exit-interval %d: stopping after step %d", config.exit_interval, done)
                break
        loop_s = time.perf_counter() - t_loop
        result.seconds = loop_s
        result.tokens_per_s = float(np.median(rates)) if rates else 0.0
        result.data_wait_share = loader.wait_s / loop_s if loop_s > 0 else 0.0
        finished = True
    finally:
        if loader is not None:
            loader.close()
        redirect.close()
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
            result.metrics_path = config.metrics
        try:
            # before the teardown: all of this rank's work is done once teardown starts
            if finished and layout.is_main and config.metrics and result.end_step > 0:
                from trainer.training.metrics import plot_loss_curve, read_metrics

                png = config.loss_curve or str(Path(config.metrics).with_suffix(".png"))
                out = plot_loss_curve(
                    [r for r in read_metrics(config.metrics) if "loss" in r],
                    png,
                    title=f"{model_label(config)} TP={tp}",
                )
                result.loss_curve_path = str(out) if out else None
        finally:
            teardown_distributed(layout)
    if layout.is_main:
        log.info(
            "done: step %d, %.1f s, %.0f tokens/s, %.2f%% of the time waiting for data",
            result.end_step,
            result.seconds,
            result.tokens_per_s,
            100 * result.data_wait_share,
        )
        outputs = [
            ("metrics", result.metrics_path),
            ("loss curve", result.loss_curve_path),
            ("checkpoints", config.save),
        ]
        written = ", ".join(f"{what} {where}" for what, where in outputs if where)
        log.info("wrote %s", written or "nothing (no --metrics or --save)")
    return result


def _packed_data(config: TrainConfig, info: DataInfo) -> Any:
    """The packed-data flags with the tokenizer's EOD id, or None when none is set."""
    from trainer.training.data import PackedData

    flags = (config.eod_mask_loss, config.reset_position_ids, config.reset_attention_mask)
    if not any(flags):
        return None
    from dataprep.manifest import load_manifest
    from dataprep.tokenizers import load_tokenizer

    recorded = (load_manifest(info.prefixes[0]) or {}).get("tokenizer") or {}
    eod = recorded.get("eod_id", recorded.get("eos_id")) if config.tokenizer is None else None
    if eod is None and info.tokenizer_spec is not None:
        eod = load_tokenizer(info.tokenizer_spec).eod_id
    if eod is None:
        raise UsageError(
            "--eod-mask-loss / --reset-position-ids / --reset-attention-mask look for the EOD "
            "token: neither the dataset's manifest nor --tokenizer gives its id"
        )
    return PackedData(int(eod), *flags)


def _build_source(
    config: TrainConfig, kind: str, info: DataInfo, seq_length: int, num_samples: int, layout: Any
) -> Any:
    from trainer.training.data import make_source

    if kind == "gpt":
        return make_source(
            "gpt",
            data_path=config.data_path,
            seq_length=seq_length,
            num_samples=num_samples,
            split=config.split,
            seed=config.seed,
            cache_dir=config.data_cache_path,
            packed=_packed_data(config, info),
        )
    from dataprep.sampling.t5 import sentinel_ids_of
    from dataprep.tokenizers import load_tokenizer

    if info.tokenizer_spec is None:
        raise UsageError(
            "mT5 span corruption needs the tokenizer's sentinels and EOS: the dataset has no "
            "manifest naming its tokenizer; pass --tokenizer NAME_OR_PATH"
        )
    tok = load_tokenizer(info.tokenizer_spec)
    sentinels = sentinel_ids_of(tok)
    from dataprep.sampling.t5 import T5Samples

    _, targets = T5Samples.lengths_for(
        config.encoder_seq_length,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
    )
    return make_source(
        "mt5",
        data_path=config.data_path,
        encoder_length=config.encoder_seq_length,
        decoder_length=config.decoder_seq_length or targets,
        num_samples=num_samples,
        split=config.split,
        seed=config.seed,
        sentinel_ids=sentinels,
        eos_id=tok.eos_id,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
        pad_id=tok.pad_id if tok.pad_id is not None else 0,
    )


def _make_optimizer(model: Any, config: TrainConfig, layout: Any) -> Any:
    return make_optimizer(
        model,
        layout,
        weight_decay=config.weight_decay,
        distributed=config.use_distributed_optimizer,
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
    )


def make_optimizer(
    model: Any, layout: Any, *, weight_decay: float, distributed: bool = False, **adamw: Any
) -> Any:
    """AdamW, weight decay on matrices only (not biases, norms); `distributed` (and DP >= 2): its
    states sharded over the DP ranks (trainer/training/distributed_optimizer.py)."""
    import torch

    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if distributed:
        if layout.dp_group is not None:
            from trainer.training.distributed_optimizer import DistributedAdamW

            return DistributedAdamW(groups, layout.dp_group, **adamw)
        if layout.is_main:
            log.info("--use-distributed-optimizer: one data-parallel rank, nothing to shard")
    return torch.optim.AdamW(groups, **adamw)


def _forward(model: Any, batch: Any, kind: str) -> Any:
    if kind == "gpt":
        if batch.position_ids is None and batch.segments is None:
            return model(batch.tokens)
        return model(batch.tokens, position_ids=batch.position_ids, segments=batch.segments)
    return model(batch.encoder_ids, batch.decoder_input_ids, batch.encoder_mask)


def _train_step(
    model,
    optimizer,
    micro_batches,
    params,
    *,
    kind,
    layout,
    autocast,
    lr,
    clip,
    vocab_size,
    parallel,
) -> tuple[float, float]:
    """One optimizer step over the micro-batches; (global mean token loss, gradient norm)."""
    import torch
    import torch.distributed as dist

    for b in micro_batches:  # on the host copies: no device sync per micro-batch
        ids = b.tokens if kind == "gpt" else b.encoder_ids
        bad = max(int(ids.max()), int(b.targets().max()))
        if bad >= vocab_size:
            raise DataprepError(
                f"the data holds token id {bad} but the model's vocabulary is {vocab_size}"
            )
    batches = [b.to(layout.device) for b in micro_batches]
    targets = [b.targets() for b in batches]
    counts = torch.stack([(t != -100).sum() for t in targets]).to(torch.float64)
    total = counts.sum()
    if layout.dp_group is not None:
        dist.all_reduce(total, group=layout.dp_group)
    loss_sum = torch.zeros((), dtype=torch.float64, device=layout.device)
    for b, t, n in zip(batches, targets, counts, strict=True):
        with autocast:
            logits = _forward(model, b, kind)
        mean = cross_entropy(
            logits.float(), t, ignore_index=-100, tp_group=layout.tp_group, vocab_size=vocab_size
        )
        # the step loss is the mean over the global batch's target tokens, whatever the split into
        # micro-batches and DP ranks
        scaled = mean * (n / total).to(mean.dtype)
        scaled.backward()
        loss_sum += scaled.detach().to(torch.float64)
    if layout.dp_group is not None:
        dist.all_reduce(loss_sum, group=layout.dp_group)
    grad_norm = apply_gradients(optimizer, params, layout=layout, clip=clip, lr=lr)
    return float(loss_sum), float(grad_norm)


def apply_gradients(optimizer, params, *, layout, clip: float, lr: float) -> Any:
    """After the backward of every micro-batch: reduce the gradients (TP for sequence-parallel
    parameters, DP), clip them to the global norm `clip` (0 = no clipping), take the AdamW step
    at `lr` and clear them; the gradient norm before clipping."""
    from trainer import parallel
    from trainer.training.distributed_optimizer import DistributedAdamW

    sharded = isinstance(optimizer, DistributedAdamW)  # reduce-scatters the DP gradients itself
    dp_group = None if sharded else layout.dp_group
    parallel.finalize_grads(params, tp_group=layout.tp_group, dp_group=dp_group)
    max_norm = clip if clip > 0 else float("inf")
    if sharded:
        optimizer.reduce_gradients()
        grad_norm = parallel.clip_grad_norm_(
            optimizer.grad_views(), max_norm, tp_group=layout.tp_group, dp_group=layout.dp_group
        )
    else:
        grad_norm = parallel.clip_grad_norm_(params, max_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _progress_bar(config: TrainConfig, start: int, end: int, kind: str) -> Any:
    """A tqdm bar on a terminal; None (log lines every --log-interval steps) otherwise, so a log
    file gets no carriage-return frames."""
    if not config.progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=end,
        initial=start,
        desc=f"train {model_label(config)}",
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )
