"""Make pipelines/lm_eval_tasks/toy_lambada.jsonl: LAMBADA-format records from the toy Pile's prose.

Format of lm-evaluation-harness's `lambada_openai` (its `lambada_openai.yaml`, dataset
EleutherAI/lambada_openai): one {"text": ...} per line; the task's context is the text up to its
last space and the target is " " + the last word. Passages are cut from the Gutenberg and Pile-CC
documents of pipelines/toy/pile (whitespace collapsed to single spaces), 40 to 80 words each, ending
at a word of letters only (2+ letters) so the target is a word and not punctuation. Fixed seed and
order: the same toy corpora give the same file. A model trained on the toy Pile has seen these
passages (the point of the test: it must beat an untrained model); this is a plumbing check, not a
benchmark.

    python pipelines/make_toy_lambada.py --output pipelines/lm_eval_tasks/toy_lambada.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORD = re.compile(r"^[A-Za-z]{2,}$")


def passages(texts: list[str], *, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    pool = []
    for text in texts:
        words = text.split()
        pos = 0
        while pos + 80 <= len(words):
            length = rng.randint(40, 80)
            end = pos + length
            # move the end back to a word of letters
            while end > pos + 20 and not WORD.match(words[end - 1]):
                end -= 1
            if WORD.match(words[end - 1]):
                pool.append(" ".join(words[pos:end]))
            pos = end
    rng.shuffle(pool)
    out = pool[:n]
    return out


def main(argv: list[str] | None = None) -> int:
    from dataprep.readers import iter_documents

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--toy", default=str(ROOT / "pipelines" / "toy" / "pile"))
    p.add_argument(
        "--output", default=str(ROOT / "pipelines" / "lm_eval_tasks" / "toy_lambada.jsonl")
    )
    p.add_argument("--records", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    texts = [
        d.text
        for path in sorted(Path(args.toy).glob("*.jsonl.zst"))
        for d in iter_documents(path)
        if d.metadata.get("pile_set_name") in ("Gutenberg (PG-19)", "Pile-CC")
    ]
    records = passages(texts, n=args.records, seed=args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text in records:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(
        f"{out}: {len(records)} records from {len(texts)} documents, {out.stat().st_size:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
