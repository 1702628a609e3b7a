"""Rebuild tokenizer_assets/mt5-toy/spiece.model from the shipped mC4 toy corpus.

SentencePiece unigram in the mT5 convention (pad 0, eos 1, unk 2, no bos, byte fallback), 7900
learned pieces + 100 sentinels = 8000 ids, `<extra_id_0>` = 7999 ... `<extra_id_99>` = 7900. One
training thread, so the bytes are the same on every run with the same sentencepiece version (0.2.3
made the shipped file; tokenizer_assets/README.md records its sha256).

    python pipelines/make_mt5_toy_tokenizer.py                 # writes tokenizer_assets/mt5-toy/
    python pipelines/make_mt5_toy_tokenizer.py --output /tmp/x  # writes /tmp/x/spiece.model
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
from pathlib import Path

from dataprep.tokenizers.train import train_sentencepiece

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "pipelines" / "toy" / "mc4"
VOCAB_SIZE = 8000  # every id, the 100 sentinels included
SENTINELS = 100


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", type=Path, default=CORPUS, help="directory of c4-*.json.gz files")
    p.add_argument(
        "--output",
        type=Path,
        default=ROOT / "tokenizer_assets" / "mt5-toy",
        help="directory for spiece.model",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    inputs = sorted(args.corpus.glob("c4-*.json.gz"))
    if not inputs:
        p.error(f"no c4-*.json.gz files in {args.corpus}")
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # train under a fixed name in a scratch directory; only the .model is shipped
        model = train_sentencepiece(
            inputs,
            Path(tmp) / "spiece",
            vocab_size=VOCAB_SIZE,
            sentinels=SENTINELS,
            model_type="unigram",
            character_coverage=0.9995,
            byte_fallback=True,
            num_threads=1,
        )
        data = model.read_bytes()
    out = args.output / "spiece.model"
    out.write_bytes(data)
    print(f"{out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
