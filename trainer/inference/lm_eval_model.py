"""Our checkpoints as an lm-evaluation-harness 0.4 model, registered as `dataprep`.

    python -m trainer.inference.lm_eval_model --model dataprep \\
        --model_args checkpoint=out/ckpt-gpt --tasks toy_lambada \\
        --include_path pipelines/lm_eval_tasks

runs lm_eval's own command line after registering the class (lm_eval finds models only in its
registry, which this import fills); from Python, `import trainer.inference.lm_eval_model` and then
`lm_eval.simple_evaluate(model="dataprep", model_args="checkpoint=...")`. The class is a
`TemplateLM`: lm_eval encodes every (context, continuation) itself and we score the ids with
`trainer.inference.evaluate.loglikelihoods`, the same function `dataprep eval --lambada` uses.
`loglikelihood_rolling` scores whole texts in lm_eval's rolling windows of the model's context;
`generate_until` decodes greedily (trainer/inference/generate.py) and cuts at the first stop string.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import lm_eval.models  # noqa: F401  lm_eval's own models first: it loads them only into an empty registry
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window


@register_model("dataprep")
class DataprepLM(TemplateLM):
    """lm_eval model over a `dataprep train --save` checkpoint (GPT or GPT-J, TP=1 in-process)."""

    def __init__(
        self,
        checkpoint: str,
        tokenizer: str | None = None,
        batch_size: int | str = 16,
        loaded: tuple | None = None,
        **_ignored,
    ) -> None:
        """`loaded`: (model, tokenizer, checkpoint dir) already in memory (`eval --tasks`)."""
        super().__init__()
        from trainer.inference.evaluate import _check_causal
        from trainer.inference.loading import load_for_inference

        if loaded is None:
            loaded = load_for_inference(checkpoint, tokenizer=tokenizer)
        self.model, self.tok, self.checkpoint = loaded
        _check_causal(self.model)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_length = self.model.config.block_size

    @property
    def eot_token_id(self) -> int:
        return self.tok.eod_id

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        return self.tok.encode(string)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kw):
        from trainer.inference.evaluate import loglikelihoods

        pairs = [(ctx, cont) for _, ctx, cont in requests]
        return loglikelihoods(self.model, pairs, eod_id=self.eot_token_id,
                              batch_size=self.batch_size)  # fmt: skip

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.eot_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows])
            out.append(sum(ll for ll, _ in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from trainer.inference.generate import SamplingParams, generate

        out = []
        for req in requests:
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until") or [self.tok.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            n = int(gen_kwargs.get("max_gen_toks", 256))
            ids = self.tok_encode(context)[-(self.max_length - 1) :]
            params = SamplingParams(greedy=True, tokens_to_generate=n, end_strings=tuple(until))
            response, lengths = generate(self.model, self.tok, [self.tok.decode(ids)], params)
            text = self.tok.decode(response["token_ids"][0][lengths[0] :])
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out


def run_tasks(
    loaded: tuple,
    tasks: list[str],
    *,
    include_paths: list[str],
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """lm_eval's `simple_evaluate` of our loaded model on `tasks` (names or YAML paths), looked up
    in `include_paths` first and then among lm_eval's own tasks; an unknown name is a ConfigError.
    lm_eval's prints go to stderr, its bars only to a terminal and only with `progress`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from dataprep.errors import ConfigError

    manager = TaskManager(include_path=include_paths or None, include_defaults=False)
    local = manager.all_tasks
    if any(t not in local for t in tasks):
        manager = TaskManager(include_path=include_paths or None)  # lm_eval's own tasks too
    unknown = [t for t in tasks if t not in manager.all_tasks and not t.endswith(".yaml")]
    if unknown:
        found = f"{', '.join(unknown)} (in {', '.join(include_paths)}: "
        found += ", ".join(local) or "none"
        raise ConfigError(
            f"{{tasks}}: no lm_eval task {ConfigError.quote(found)}; lm_eval's own: "
            "`lm_eval ls tasks`)",
            "tasks",
        )
    model = DataprepLM(loaded[2], batch_size=batch_size, loaded=loaded)
    with _lm_eval_quiet(bars=progress and sys.stderr.isatty()):
        return lm_eval.simple_evaluate(
            model=model,
            tasks=tasks,
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            bootstrap_iters=1000,  # stderr of each metric (lm_eval's default 100000 takes long)
        )


class _DropMetadataHint(logging.Filter):
    """lm_eval.api.task warns, for every task without metadata, that `--metadata` exists: advice
    for lm_eval's own command line, which `dataprep eval` does not have."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "--metadata" not in record.getMessage()


@contextlib.contextmanager
def _lm_eval_quiet(*, bars: bool):
    """While lm_eval runs: its `print`s (`bootstrapping for stddev: ...`) go to stderr, so stdout
    holds only our output (one JSON object with --json); its INFO chatter and the `--metadata` hint
    are dropped (warnings stay); without `bars`, every tqdm bar it or `datasets` opens is disabled
    (tqdm reads TQDM_DISABLE only when imported, so the switch is made on the class)."""
    from tqdm import std

    loggers = [logging.getLogger("lm_eval"), logging.getLogger("lm_eval.api.task")]
    levels = [lg.level for lg in loggers]
    hint = _DropMetadataHint()
    init = std.tqdm.__init__

    def no_bar(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    loggers[0].setLevel(logging.WARNING)
    loggers[1].addFilter(hint)
    if not bars:
        std.tqdm.__init__ = no_bar
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        std.tqdm.__init__ = init
        loggers[1].removeFilter(hint)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def main() -> int:
    """lm_eval's command line with the `dataprep` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
