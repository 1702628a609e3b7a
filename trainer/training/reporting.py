"""What rank 0 of a training run reports: the start line, the metrics file and the progress
bar, a record per step, the summary at the end.

`model_label` names the model in these lines (and in `train --dry-run`). The helpers take the
run state that trainer/training/loop.py's setup builds (`run`) and its `TrainResult` (`result`);
on a terminal a tqdm bar shows the steps with log lines above it, elsewhere a log line every
--log-interval steps.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from trainer.config import DEFAULT_MODEL, TrainConfig

log = logging.getLogger(__name__)


def model_label(config: TrainConfig) -> str:
    """--model as given, or what None means for this run."""
    if config.model:
        return config.model
    return "the --load checkpoint's model" if config.load else DEFAULT_MODEL


def _log_start(run: Any, gbs: int) -> None:
    config, layout = run.config, run.layout
    tp = config.tensor_model_parallel_size
    # a TP-sharded parameter (tp_dim set) is 1/tp of the whole; replicated ones count once
    n_params = sum(
        p.numel() * (tp if getattr(p, "tp_dim", None) is not None else 1)
        for p in run.model.parameters()
    )
    log.info(
        "%s %s (~%.1fM parameters), TP=%d DP=%d, global batch %d (micro %d, "
        "accumulation %d),"
        " %d tokens/step, steps %d..%d",
        run.kind,
        model_label(config),
        n_params / 1e6,
        tp,
        layout.dp_size,
        gbs,
        config.micro_batch_size,
        gbs // (config.micro_batch_size * layout.dp_size),
        run.tokens_per_step,
        run.start_step,
        run.end_step,
    )


def _open_outputs(run: Any, result: Any, outputs: contextlib.ExitStack) -> None:
    """Rank 0's metrics file and progress bar (log lines above the bar, never glued onto it)."""
    config = run.config
    if config.metrics:
        from trainer.training.metrics import MetricsWriter

        run.metrics = MetricsWriter(config.metrics, resume_from=run.start_step)

        def close_metrics() -> None:
            run.metrics.close()
            result.metrics_path = config.metrics

        outputs.callback(close_metrics)
    run.bar = _progress_bar(config, run.start_step, run.end_step, run.kind)
    if run.bar is not None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        outputs.callback(run.bar.close)
        outputs.enter_context(logging_redirect_tqdm())


def _report_step(run: Any, rec: dict[str, Any]) -> None:
    """Rank 0: the metrics record, the progress bar or a log line every --log-interval steps."""
    if run.metrics:
        run.metrics.write(rec)
    done, loss, lr, tps = rec["step"], rec["loss"], rec["lr"], rec["tokens_per_s"]
    if run.bar is not None:
        run.bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s", refresh=False)
        run.bar.update(1)
    elif done % run.config.log_interval == 0 or done == run.end_step:
        log.info("step %d/%d loss %.4f lr %.3e %.0f tokens/s", done, run.end_step, loss, lr, tps)


def _log_summary(config: TrainConfig, result: Any) -> None:
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
