"""The `dataprep` command line: a thin dispatcher over `dataprep/commands/*.py`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
imports nothing heavy at module level, so `dataprep --help` stays fast. User mistakes raise
`DataprepError` and are printed as one line; the exit code is 0 on success, 1 on bad data, 2 on bad
usage (README "Exit codes"). An OSError no command caught is printed as one line too: 2 when a path
names nothing or the wrong kind of thing, 1 otherwise (permissions, a full disk); -v adds the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from dataprep import __version__
from dataprep.commands.common import flag_for
from dataprep.errors import DataprepError
from dataprep.signals import Terminated, terminate_as_interrupt

# command name -> module under dataprep.commands
COMMANDS: dict[str, str] = {
    "build-index": "build_index",
    "merge": "merge",
    "inspect": "inspect",
    "train-tokenizer": "train_tokenizer",
    "preview-masking": "preview_masking",
    "preview-samples": "preview_samples",
    "report": "report",
    "train": "train",
    "export-hf": "export_hf",
    "import-hf": "import_hf",
    "import-megatron": "import_megatron",
    "export-megatron": "export_megatron",
    "import-nemo": "import_nemo",
    "export-nemo": "export_nemo",
    "smoke": "smoke",
    "generate": "generate",
    "fill-mask": "fill_mask",
    "serve": "serve",
    "eval": "eval",
}


# OSErrors that mean a path given on the command line names nothing, or the wrong kind of thing
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"dataprep.commands.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"dataprep.commands.{module_name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataprep",
        description=(
            "Prepare LLM pretraining data in Megatron's .bin/.idx format, look at it, train on it."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"dataprep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,  # --worker is a mistake, not --workers
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that an unknown flag after a command is reported by that command's
    parser (its usage line and `dataprep CMD: error: ...`), not by the top-level one."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        words = list(sys.argv[1:] if argv is None else argv)
        command = words.index(args.command) if args.command in words else len(words)
        before = extra[0] in words[:command]  # a flag of `dataprep` itself, before the command
        owner = parser if before else getattr(args, "_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _ErrorsWithFlags(logging.Filter):
    """Shows the config fields of a DataprepError given as a log argument (a skipped record's
    reason: "choose the text keys with json_keys") as this CLI's flags (--json-keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, DataprepError) for a in record.args
        ):
            record.args = tuple(
                a.render(flag_for) if isinstance(a, DataprepError) else a for a in record.args
            )
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ErrorsWithFlags) for f in handler.filters):
            handler.addFilter(_ErrorsWithFlags())
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if not sys.stderr.isatty():  # no progress-bar frames in logs: transformers' bars too
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        with terminate_as_interrupt():  # `kill PID` cleans up and reports as Ctrl-C does
            return int(args._run(args) or 0)
    except DataprepError as e:
        message = e.render(flag_for)
        print(f"dataprep {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print(f"dataprep {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"dataprep {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a path the system refused, not caught by the command: still one line
        logging.getLogger(__name__).debug("%s failed", args.command, exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        print(f"dataprep {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2 if isinstance(e, _PATH_ERRORS) else 1
