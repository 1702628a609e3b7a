"""Write the README's de-duplication demo input: three Pile records that repeat the toy Pile.

Records 5 and 17 of pipelines/toy/pile/00.jsonl.zst come back as exact duplicates (the second
with whitespace padding around it, which `--dedup exact` ignores) and record 40 as a near
duplicate (three words changed, far above the default Jaccard threshold of 0.8):

    python pipelines/make_dedup_demo.py runs/repeats.jsonl
    dataprep build-index --input pipelines/toy/pile runs/repeats.jsonl --output-prefix out/dd \\
        --tokenizer gpt2 --append-eod --dedup minhash
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import zstandard

PILE = Path(__file__).resolve().parent / "toy" / "pile" / "00.jsonl.zst"


def demo_records() -> list[dict]:
    with zstandard.open(PILE, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    exact, padded, near = (dict(rows[i]) for i in (5, 17, 40))
    padded["text"] = "\n  " + padded["text"] + "  \n"
    words = near["text"].split(" ")
    for k in (10, 20, 30):  # three words changed
        words[k] = "CHANGED"
    near["text"] = " ".join(words)
    return [exact, padded, near]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", type=Path, help="the JSON Lines file to write")
    args = p.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        for r in demo_records():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{args.output}: 3 records (2 exact copies, 1 near copy of pipelines/toy/pile records)")


if __name__ == "__main__":
    main()
