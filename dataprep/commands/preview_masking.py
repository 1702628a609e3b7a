"""`dataprep preview-masking`: canonical T5 span corruption of real data, as a person reads it.

Samples come from `dataprep.sampling.build_t5_samples` (T5's `span_corruption`), over a dataset
prefix or a raw input file tokenized on the fly. `--prompt` shows how `<mask>` markers in a prompt
become sentinel ids (`dataprep.sampling.prompts`), and where NeMo's megatron_t5_eval would read
the prompt differently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from dataprep.errors import DataprepError, UsageError
from dataprep.sampling.t5_samples import MIN_INPUTS_LENGTH

HELP = "show T5 span corruption (encoder input, decoder target, sentinels) of dataset samples"
DESCRIPTION = """\
Show canonical T5/mT5 span corruption of a dataset: for each sample the original text, the encoder
input with each sentinel <extra_id_N> highlighted, the decoder target, and figures (noise density
achieved, spans, input and target lengths). Samples are consecutive chunks of the concatenated
documents (568 raw tokens for an encoder length of 512); sample k is masked with a generator seeded
by (seed, k), exactly as training sees it. Colour on a terminal; plain markers when piped.

examples:
  dataprep preview-masking out/mc4_fr_text_document
  dataprep preview-masking out/mc4_fr_text_document --start 100 --num-samples 5 --seq-length 128
  dataprep preview-masking --input c4-fr.tfrecord-00000-of-01024.json.gz --tokenizer mt5-toy
  dataprep preview-masking out/mc4_fr_text_document --json | jq .noise_density
  dataprep preview-masking --prompt "La capitale de la France est <mask>." --tokenizer mt5-toy"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prefix",
        nargs="?",
        metavar="PREFIX",
        help="dataset prefix (PREFIX.bin/.idx); the tokenizer comes from its build manifest",
    )
    p.add_argument(
        "--input",
        metavar="FILE",
        help="a raw jsonl / json.gz / jsonl.zst file to tokenize on the fly instead of PREFIX",
    )
    p.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="with --input: JSON key holding the text (default: text)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="SPEC",
        help="tokenizer name or path (default: the one in PREFIX's build manifest)",
    )
    p.add_argument("--prompt", help="show how <mask> markers in this prompt become sentinel ids")
    p.add_argument(
        "--num-samples", type=int, default=3, metavar="N", help="samples to show (default: 3)"
    )
    p.add_argument("--start", type=int, default=0, metavar="K", help="first sample (default: 0)")
    p.add_argument("--seed", type=int, default=1234, help="masking seed (default: 1234)")
    p.add_argument(
        "--seq-length",
        type=int,
        default=512,
        metavar="L",
        help="encoder input length, EOS included (default: 512); the raw chunk and target "
        "lengths follow as in T5 (568 and 114 for 512)",
    )
    p.add_argument(
        "--noise-density",
        type=float,
        default=0.15,
        help="fraction of tokens masked (default: 0.15)",
    )
    p.add_argument(
        "--mean-noise-span-length",
        type=float,
        default=3.0,
        help="mean tokens per masked span (default: 3.0)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per sample, one per line")
    color = p.add_mutually_exclusive_group()
    color.add_argument(
        "--color",
        dest="color",
        action="store_true",
        default=None,
        help="colour even when not writing to a terminal",
    )
    color.add_argument(
        "--no-color",
        dest="color",
        action="store_false",
        help="plain text: sentinels as <extra_id_N> markers",
    )


def _check_args(args: argparse.Namespace) -> None:
    if not 0 < args.noise_density < 1:
        raise UsageError(
            f"--noise-density {args.noise_density} must be strictly between 0 and 1 "
            "(the fraction of tokens masked; T5 uses 0.15)"
        )
    if not args.mean_noise_span_length > 0:
        raise UsageError(
            f"--mean-noise-span-length {args.mean_noise_span_length} must be > 0 (T5 uses 3.0)"
        )
    if args.seq_length < MIN_INPUTS_LENGTH:
        raise UsageError(
            f"--seq-length {args.seq_length} must be >= {MIN_INPUTS_LENGTH}: an encoder input "
            "needs at least one clean token, one sentinel and EOS (T5 uses 512)"
        )
    if args.num_samples < 1:
        raise UsageError(f"--num-samples {args.num_samples} must be >= 1")
    if args.start < 0:
        raise UsageError(f"--start {args.start} must be >= 0")
    if args.prompt is not None:
        if args.tokenizer is None:
            raise UsageError("--prompt needs --tokenizer (e.g. --tokenizer mt5-toy)")
        if args.prefix or args.input:
            raise UsageError("--prompt takes no PREFIX or --input")
        return
    if bool(args.prefix) == bool(args.input):
        raise UsageError("give a dataset PREFIX or --input FILE (one of them)")
    if args.input and args.tokenizer is None:
        raise UsageError("--input needs --tokenizer: a raw file does not say how to tokenize it")
    if args.input and not os.path.isfile(args.input):
        what = "is a directory" if os.path.isdir(args.input) else "does not exist"
        raise UsageError(f"--input {args.input} {what}; give one jsonl / json.gz / jsonl.zst file")


def _sentinel_tokenizer(spec: str):
    from dataprep.sampling.t5_samples import sentinel_ids_of
    from dataprep.tokenizers import load_tokenizer

    tok = load_tokenizer(spec)
    return tok, sentinel_ids_of(tok)


def run(args: argparse.Namespace) -> int:
    from dataprep.sampling.t5_samples import T5Samples, build_t5_samples

    _check_args(args)
    color = False if args.json else _use_color(args.color)
    if args.prompt is not None:
        tok, sentinels = _sentinel_tokenizer(args.tokenizer)
        return _run_prompt(args.prompt, tok, sentinels, as_json=args.json, color=color)

    # cheap checks first: lengths, then the tokenizer, then the data
    tokens_length, targets_length = T5Samples.lengths_for(
        args.seq_length,
        noise_density=args.noise_density,
        mean_noise_span_length=args.mean_noise_span_length,
    )
    if args.input:
        tok, sentinels = _sentinel_tokenizer(args.tokenizer)
        _check_span_budget(args, tokens_length, sentinels)
        need = (args.start + args.num_samples) * tokens_length
        source: Any = _tokenize_input(args.input, tok, json_keys=args.json_keys, max_tokens=need)
        where = args.input
    else:
        from dataprep.commands.common import dataset_tokenizer_spec
        from dataprep.indexed import IndexedDatasetReader

        spec = dataset_tokenizer_spec(args.prefix, args.tokenizer)
        tok, sentinels = _sentinel_tokenizer(spec)
        _check_span_budget(args, tokens_length, sentinels)
        source = IndexedDatasetReader(args.prefix)
        where = args.prefix
    samples = build_t5_samples(
        source,
        sentinel_ids=sentinels,
        eos_id=tok.eos_id,
        inputs_length=args.seq_length,
        noise_density=args.noise_density,
        mean_noise_span_length=args.mean_noise_span_length,
        seed=args.seed,
    )
    if args.start >= len(samples):
        raise UsageError(
            f"--start {args.start} is past the last sample: {where} gives "
            f"{len(samples)} samples of {tokens_length} raw tokens"
        )
    stop = min(args.start + args.num_samples, len(samples))
    if not args.json:
        head = f"{where}: {samples.num_tokens} tokens -> {len(samples)} samples"
        print(_header(f"{head} of {tokens_length} raw tokens (tokenizer {tok.name})", color))
        print(
            f"encoder input {args.seq_length} ids, decoder target {targets_length} ids (EOS "
            f"included); noise density {args.noise_density}, mean noise span length "
            f"{args.mean_noise_span_length}, seed {args.seed}"
        )
        if stop - args.start < args.num_samples:
            print(f"(only {stop - args.start} samples from --start {args.start})")
    for k in range(args.start, stop):
        ex = samples[k]
        _check_vocab(ex.tokens, tok, where, k)
        record = _sample_record(ex, tok, sentinels, samples, color=color)
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
        else:
            _print_sample(record, color=color)
    return 0


def _use_color(flag: bool | None) -> bool:
    from dataprep.preview import use_color

    return use_color(sys.stdout, flag)


def _header(text: str, color: bool) -> str:
    from dataprep.preview import highlight

    return highlight(text, "bold", color=color)


def _check_span_budget(args: argparse.Namespace, tokens_length: int, sentinels: list[int]) -> None:
    from dataprep.sampling.t5 import span_counts

    num_spans = span_counts(
        tokens_length,
        noise_density=args.noise_density,
        mean_noise_span_length=args.mean_noise_span_length,
    )[1]
    if num_spans > len(sentinels):
        raise UsageError(
            f"--seq-length {args.seq_length} makes {num_spans} noise spans per sample but the "
            f"tokenizer has {len(sentinels)} sentinels: use a shorter --seq-length, a lower "
            "--noise-density or a longer --mean-noise-span-length"
        )


def _check_vocab(tokens: np.ndarray, tok, where: str, k: int) -> None:
    top = int(tokens.max()) if tokens.size else 0
    if top >= tok.vocab_size:
        raise DataprepError(
            f"{where}: sample {k} holds token id {top}, out of range for tokenizer {tok.name} "
            f"(vocab_size {tok.vocab_size}): the dataset was built with another tokenizer; "
            "pass the right one with --tokenizer"
        )


def _tokenize_input(path: str, tok, *, json_keys: list[str], max_tokens: int) -> np.ndarray:
    """Token ids of the file's documents, joined with no separator, up to max_tokens."""
    from dataprep.readers import iter_documents

    parts, total = [], 0
    for doc in iter_documents(path, json_keys=json_keys):
        ids = tok.encode(doc.text)
        parts.append(np.asarray(ids, dtype=np.int64))
        total += len(ids)
        if total >= max_tokens:
            break
    return np.concatenate(parts)[:max_tokens] if parts else np.zeros(0, dtype=np.int64)


def _marks(tok, sentinels: list[int]) -> dict[int, tuple[str, str]]:
    from dataprep.preview import span_style

    marks = {int(s): (f"<extra_id_{n}>", f"bold {span_style(n)}") for n, s in enumerate(sentinels)}
    if tok.eos_id is not None:
        marks[int(tok.eos_id)] = (tok.id_to_piece(tok.eos_id), "dim")
    return marks


def _sample_record(ex, tok, sentinels: list[int], samples, *, color: bool) -> dict[str, Any]:
    from dataprep.preview import render_ids, span_style

    marks = _marks(tok, sentinels)
    padded = np.concatenate([[False], ex.noise_mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    noise_ranges = [
        (int(a), int(b), f"underline {span_style(n)}")
        for n, (a, b) in enumerate(zip(edges[::2], edges[1::2], strict=True))
    ]
    record = {
        "index": ex.index,
        "start_token": ex.index * samples.tokens_length,  # offset in the concatenated corpus
        "tokens": ex.tokens.tolist(),
        "inputs": ex.inputs.tolist(),
        "targets": ex.targets.tolist(),
        "sentinels": ex.sentinels.tolist(),
        "text": render_ids(
            tok.decode, ex.tokens, marks={int(tok.eos_id): marks[int(tok.eos_id)]}, color=False
        ),
        "inputs_text": render_ids(tok.decode, ex.inputs, marks=marks, color=False),
        "targets_text": render_ids(tok.decode, ex.targets, marks=marks, color=False),
        "noise_density": round(ex.noise_density, 6),
        "num_noise": int(ex.noise_mask.sum()),
        "num_spans": ex.num_spans,
        "tokens_length": int(ex.tokens.size),
        "inputs_length": int(ex.inputs.size),
        "targets_length": int(ex.targets.size),
        "seed": samples.seed,
    }
    if color:  # styled copies for the terminal only
        record["_text"] = render_ids(
            tok.decode,
            ex.tokens,
            ranges=noise_ranges,
            marks={int(tok.eos_id): marks[int(tok.eos_id)]},
            color=True,
        )
        record["_inputs_text"] = render_ids(tok.decode, ex.inputs, marks=marks, color=True)
        record["_targets_text"] = render_ids(tok.decode, ex.targets, marks=marks, color=True)
    return record


def _print_sample(r: dict[str, Any], *, color: bool) -> None:
    from dataprep.preview import escape_controls, highlight, indent

    def section(title: str) -> str:
        return highlight(title, "bold", color=color)

    n = r["num_spans"]
    print()
    first, end = r["start_token"], r["start_token"] + r["tokens_length"]
    title = f"=== sample {r['index']} (tokens {first}..{end} of the corpus) ==="
    print(highlight(title, "bold", color=color))
    print(
        f"noise {r['num_noise']}/{r['tokens_length']} tokens (density {r['noise_density']:.3f}) "
        f"in {n} span{'s' if n != 1 else ''} (mean {r['num_noise'] / max(n, 1):.2f}); "
        f"encoder input {r['inputs_length']} ids, decoder target {r['targets_length']} ids"
    )
    print(section("--- original text" + (" (masked spans underlined)" if color else "")))
    print(indent(r.get("_text", escape_controls(r["text"]))))
    print(section("--- encoder input"))
    print(indent(r.get("_inputs_text", escape_controls(r["inputs_text"]))))
    print(section("--- decoder target"))
    print(indent(r.get("_targets_text", escape_controls(r["targets_text"]))))


# ----------------------------------------------------------------------------------------------
# --prompt


def _run_prompt(prompt: str, tok, sentinels: list[int], *, as_json: bool, color: bool) -> int:
    from dataprep.preview import highlight, render_ids
    from dataprep.sampling.prompts import read_masked_prompt

    r = read_masked_prompt(prompt, tok, sentinels)
    inputs, used, notes = r.inputs, r.sentinels, r.notes
    pieces = [tok.id_to_piece(i) for i in inputs]
    if as_json:
        record = {
            "prompt": prompt,
            "text": r.text,
            "inputs": inputs,
            "pieces": pieces,
            "sentinels": used,
            "nemo_compatible": r.nemo_compatible,
            "nemo_text": r.nemo_text,
            "nemo_inputs": r.nemo_inputs,
            "notes": notes,
        }
        print(json.dumps(record, ensure_ascii=False))
        return 0
    marks = _marks(tok, sentinels)
    print(highlight(f"prompt ({tok.name}):", "bold", color=color), prompt)
    print(
        highlight("masked:", "bold", color=color),
        render_ids(tok.decode, inputs, marks=marks, color=color),
    )
    print(highlight(f"encoder input ({len(inputs)} ids, EOS included):", "bold", color=color))
    for i, piece in zip(inputs, pieces, strict=True):
        label = marks[i][0] if i in marks else piece
        style = marks[i][1] if i in marks else ""
        print(
            f"  {i:>8}  {highlight(label, style, color=color)}"
            + (f"   ({piece})" if i in marks and piece != label else "")
        )
    print(highlight("sentinels:", "bold", color=color), " ".join(str(i) for i in used))
    for note in notes:
        print("note:", note)
    return 0
