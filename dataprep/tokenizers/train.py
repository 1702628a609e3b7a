"""Train tokenizers: SentencePiece in the mT5 convention, and byte-level BPE with Hugging Face
`tokenizers`.

`train_sentencepiece` gives pad 0, eos 1, unk 2, no bos, byte fallback, and appends `sentinels`
pieces so that `<extra_id_0>` = vocab_size - 1 ... `<extra_id_{n-1}>` = vocab_size - n
(the mT5 convention of HF `T5Tokenizer`). The sentinels are USER_DEFINED pieces, so the literal text
`<extra_id_3>` encodes to that one id. Inputs are anything `dataprep.readers.iter_documents` reads;
each document is fed line by line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from dataprep.errors import DataprepError, UsageError
from dataprep.tokenizers.base import sentinel_number

log = logging.getLogger(__name__)

# SentencePiece drops training sentences longer than max_sentence_length bytes (default 4192); we
# cut long
# lines into pieces of at most this many characters (<= 4 bytes each in UTF-8) instead of losing
# them.
MAX_LINE_CHARS = 1000


def iter_training_lines(texts: Iterable[str], *, max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """Non-blank lines of each text, long lines cut into pieces of at most `max_chars` chars."""
    for text in texts:
        for line in text.splitlines():
            if not line.strip():
                continue
            for start in range(0, len(line), max_chars):
                yield line[start : start + max_chars]


def iter_input_texts(
    inputs: Sequence[str | os.PathLike],
    *,
    json_keys: Sequence[str] = ("text",),
    max_documents: int | None = None,
) -> Iterator[str]:
    """Document texts from reader inputs (files, directories, globs), at most `max_documents`."""
    from dataprep.readers import expand_inputs, iter_documents

    n = 0
    for path in expand_inputs(inputs):
        for doc in iter_documents(path, json_keys=tuple(json_keys)):
            if max_documents is not None and n >= max_documents:
                return
            n += 1
            yield doc.text


def train_sentencepiece(
    inputs: Sequence[str | os.PathLike] | None,
    output_prefix: str | os.PathLike,
    *,
    vocab_size: int,
    model_type: str = "unigram",
    sentinels: int = 100,
    character_coverage: float = 0.9995,
    byte_fallback: bool = True,
    json_keys: Sequence[str] = ("text",),
    max_documents: int | None = None,
    texts: Iterable[str] | None = None,
    input_sentence_size: int = 0,
    seed: int = 0,
    num_threads: int = 1,
) -> Path:
    """Train a SentencePiece model; write `{output_prefix}.model` and `.vocab`, return the first.

    `vocab_size` counts every id, sentinels included: the trainer learns `vocab_size - sentinels`
    pieces. Give either reader `inputs` or an iterable of `texts`. `input_sentence_size > 0` samples
    that many lines (seeded by `seed`). num_threads=1 keeps the result byte-identical between runs.
    """
    import sentencepiece

    if vocab_size <= sentinels + 3:
        raise UsageError(
            f"vocab_size {vocab_size} is too small for {sentinels} sentinels + pad/eos/unk"
        )
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise UsageError(f"model_type {model_type!r}: expected unigram, bpe, char or word")
    if texts is None:
        if not inputs:
            raise UsageError("no training inputs: pass input files or texts")
        texts = iter_input_texts(inputs, json_keys=json_keys, max_documents=max_documents)
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    sentencepiece.set_random_generator_seed(seed)
    n_lines = 0
    read_error: DataprepError | None = None  # raised while SentencePiece pulled lines

    def counted(lines: Iterator[str]) -> Iterator[str]:
        nonlocal n_lines, read_error
        try:
            for line in lines:
                n_lines += 1
                yield line
        except DataprepError as e:  # SentencePiece would wrap it into a multi-line RuntimeError
            read_error = e
            raise

    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=counted(iter_training_lines(texts)),
            model_prefix=str(output_prefix),
            vocab_size=vocab_size - sentinels,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        if read_error is not None:  # a bad input, reported as the reader said it (file:line)
            raise read_error from None
        raise DataprepError(
            f"SentencePiece training on {n_lines} lines failed: {e} (it was asked for "
            f"{vocab_size - sentinels} pieces: vocab_size {vocab_size} minus {sentinels} "
            "sentinels; with byte fallback 259 of them are bytes and specials)"
        ) from e
    model_path = output_prefix.with_name(output_prefix.name + ".model")
    proto = _read_model_proto(model_path)
    # the trainer records the output path; keep only its last part so the bytes do not depend on
    # where
    # the model was trained (the training is otherwise deterministic for a fixed num_threads)
    proto.trainer_spec.model_prefix = output_prefix.name
    _add_sentinel_pieces(proto, sentinels, model_path)
    model_path.write_bytes(proto.SerializeToString())
    vocab_path = output_prefix.with_name(output_prefix.name + ".vocab")  # human-readable piece list
    vocab_path.write_text(
        "".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces), encoding="utf-8"
    )
    log.info("trained %s (%d lines, vocab_size %d)", model_path, n_lines, vocab_size)
    return model_path


def append_sentinels(
    model_path: str | os.PathLike, output_path: str | os.PathLike | None = None, *, n: int = 100
) -> Path:
    """Append `<extra_id_{n-1}>` .. `<extra_id_0>` as USER_DEFINED pieces (`<extra_id_0>` last).

    Rewrites `model_path` in place unless `output_path` is given. Use it on a model without
    sentinels, e.g. one trained elsewhere; `train_sentencepiece` already adds them.
    """
    model_path = Path(model_path)
    proto = _read_model_proto(model_path)
    _add_sentinel_pieces(proto, n, model_path)
    output_path = Path(output_path) if output_path is not None else model_path
    output_path.write_bytes(proto.SerializeToString())
    return output_path


def _read_model_proto(model_path: Path):
    try:
        from sentencepiece import sentencepiece_model_pb2
    except Exception as e:  # protobuf missing (ImportError) or older than the generated code
        raise DataprepError(
            f"editing a SentencePiece model needs a protobuf package matching sentencepiece's "
            f"generated code ({type(e).__name__}: {e}); pip install --upgrade protobuf"
        ) from e
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise DataprepError(f"{model_path}: not a SentencePiece model: {e}") from e
    return proto


def _add_sentinel_pieces(proto, n: int, where: Path) -> None:
    existing = [p.piece for p in proto.pieces if sentinel_number(p.piece) is not None]
    if n and existing:
        raise UsageError(
            f"{where} already has sentinel pieces ({existing[0]}, ...); not adding more"
        )
    user_defined = type(proto).SentencePiece.USER_DEFINED
    for i in reversed(range(n)):  # <extra_id_{n-1}> first, so <extra_id_0> ends up as the last id
        piece = proto.pieces.add()
        piece.piece = f"<extra_id_{i}>"
        piece.score = 0.0
        piece.type = user_defined


def train_bpe(
    inputs: Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    *,
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    json_keys: Sequence[str] = ("text",),
    max_documents: int | None = None,
    texts: Iterable[str] | None = None,
) -> Path:
    """Train a byte-level BPE (GPT-2 split, no prefix space); write `output_dir/tokenizer.json`.

    The special tokens take the first ids (<|endoftext|> = 0 by default); it is the eod id on load.
    Give either reader `inputs` or an iterable of `texts`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(special_tokens):
        raise UsageError(
            f"vocab_size {vocab_size} is below 256 bytes + {len(special_tokens)} specials"
        )
    if texts is None:
        if not inputs:
            raise UsageError("no training inputs: pass input files or texts")
        texts = iter_input_texts(inputs, json_keys=json_keys, max_documents=max_documents)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "tokenizer.json"
    tok.save(str(path))
    log.info("trained %s (vocab_size %d)", path, tok.get_vocab_size())
    return path
