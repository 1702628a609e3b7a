"""Helpers for the trainer tests: tiny datasets written in tmp_path, with a build manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dataprep.indexed import IndexedDatasetWriter


def write_dataset(
    prefix: Path,
    docs: list[np.ndarray],
    *,
    vocab_size: int,
    spec: str = "toy",
    eos_id: int | None = None,
    manifest: bool = True,
) -> str:
    """Write docs to {prefix}.bin/.idx (uint16) and a manifest naming a `vocab_size` tokenizer."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        for d in docs:
            w.add_document(np.asarray(d, dtype=np.uint16))
    if manifest:
        tokens = int(sum(len(d) for d in docs))
        top = int(max(int(np.max(d)) for d in docs if len(d)))
        (Path(str(prefix) + ".json")).write_text(
            json.dumps(
                {
                    "tokens": tokens,
                    "documents": len(docs),
                    "max_token_id": top,
                    "tokenizer": {"spec": spec, "vocab_size": vocab_size, "eos_id": eos_id},
                }
            )
        )
    return str(prefix)


def markov_docs(
    n_docs: int,
    *,
    vocab: int,
    length: tuple[int, int] = (20, 200),
    seed: int = 0,
    eod: int | None = None,
) -> list[np.ndarray]:
    """Documents from a sparse random bigram chain: learnable, so the loss falls quickly."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(2, vocab, size=(vocab, 3))  # each id is followed by one of 3 ids
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(*length))
        x = np.empty(n, dtype=np.int64)
        x[0] = rng.integers(2, vocab)
        for i in range(1, n):
            x[i] = nxt[x[i - 1], rng.integers(0, 3)]
        if eod is not None:
            x = np.append(x, eod)
        docs.append(x)
    return docs


def train_tiny_gpt(directory: Path, *, tp: int = 1, steps: int = 2, docs: int = 20) -> tuple:
    """(checkpoint root, dataset prefix): a gpt-tiny trained `steps` steps at TP `tp` on a
    learnable toy dataset with the GPT-2 vocabulary, for tests that need any real checkpoint."""
    from trainer.train import TrainConfig, run

    prefix = write_dataset(directory / "data", markov_docs(docs, vocab=50257), vocab_size=50257,
                           spec="gpt2", eos_id=50256)  # fmt: skip
    cfg = TrainConfig(data_path=(prefix,), model="gpt-tiny", seq_length=32, train_iters=steps,
                      micro_batch_size=2, num_threads=1, progress=False, lr=1e-3,
                      tensor_model_parallel_size=tp, save=str(directory / "ckpt"))  # fmt: skip
    assert run(cfg) == 0
    return directory / "ckpt", prefix


def write_mt5_dataset(prefix: Path, *, docs: int = 80, seed: int = 4) -> str:
    """Markov documents in the shipped mt5-toy tokenizer's ids (clear of its sentinels), EOS
    after each, with a manifest naming mt5-toy: what mT5 span corruption needs."""
    from dataprep.tokenizers import load_tokenizer

    tok = load_tokenizer("mt5-toy")
    ids = markov_docs(docs, vocab=tok.vocab_size - 200, seed=seed, eod=tok.eos_id)
    return write_dataset(prefix, ids, vocab_size=tok.vocab_size, spec="mt5-toy", eos_id=tok.eos_id)
