"""The parts a build is cut into: byte ranges of a plain JSON Lines file hold every line exactly
once, numbered as in the whole file, whatever the cut points."""

import os

from hypothesis import given
from hypothesis import strategies as st

from dataprep.build.plan import plan_parts
from dataprep.readers.jsonl import LineRange, line_blocks


@given(
    lines=st.lists(st.text(alphabet="ab\u00e9", max_size=30), min_size=0, max_size=40),
    last_newline=st.booleans(),
    parts=st.integers(1, 9),
)
def test_ranges_hold_each_line_once_with_its_number(tmp_path_factory, lines, last_newline, parts):
    path = tmp_path_factory.mktemp("r") / "x.jsonl"
    data = "\n".join(lines) + ("\n" if last_newline and lines else "")
    path.write_bytes(data.encode("utf-8"))
    size = os.path.getsize(path)
    cuts = plan_parts([path], [size], 0, split_bytes=max(1, -(-size // parts)))
    assert sum(p.size for p in cuts) == size and cuts[-1].last and cuts[-1].end is None
    seen = []
    for part in cuts:
        with LineRange(path, part.start, part.end) as reader:
            for first, block in line_blocks(reader, 7, first_line=reader.first_line):
                rows = block.split(b"\n")
                if rows[-1] == b"":
                    rows.pop()  # the block ends with a newline (as the parser reads it)
                seen += [(first + i, raw.decode("utf-8")) for i, raw in enumerate(rows)]
    whole = data.encode("utf-8").split(b"\n")
    if whole and whole[-1] == b"":
        whole.pop()
    assert seen == [(n, raw.decode("utf-8")) for n, raw in enumerate(whole, start=1)]
