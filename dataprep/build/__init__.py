"""`build_index`: read documents -> tokenize -> write Megatron `.bin/.idx` datasets, the layout
megatron-core's `datasets/indexed_dataset.py` reads.

Outputs `{output_prefix}_{key}_{document|sentence}.bin/.idx` per JSON key, as Megatron's
preprocess_data.py, each with a manifest `{prefix}.json` (counts, skips by reason, inputs with size
and sha256, tokenizer identity, largest token id) and `{prefix}.provenance.npy` (int64 rows `(input
index, line)`, one per written document).

Modules, one concern each, in the order `run.build_index` uses them: `config` (BuildConfig,
KeyStats), `plan` (the inputs, tokenizer and dtype; the parts of work), `state` (resume state,
loaded and saved), `output` (one KeyOutput per key: writer, counts, provenance, de-duplicator),
`sink` (routes results to the outputs), `progress`, `executor_local` (the process pool) or
`executor_ray`, `read` (one input file -> tasks), `tasks` (the typed tasks and results),
`encode` (the task function: parse and tokenize), `summary` (BuildSummary), `empty` (why nothing
was written).

Parallelism: the main process decompresses each JSON Lines file and cuts it into blocks of whole
lines (about `chunk_bytes` each, line numbers counted); `workers` processes parse, check and
tokenize the blocks (`encode.run_task`) and the main process writes their results in submission
order, so the bytes do not depend on `workers`. Bad records found by a worker are raised or
counted exactly as a sequential read would (`readers.CollectedRecordErrors`).
Resumability: `.bin` data goes to temporary names; after each input file the outputs' state is
saved to `{output_prefix}.dataprep-build/`, and a resumed build truncates back to the last
finished file and continues there. Real names appear only when the build completes.
"""

from dataprep.build.config import BuildConfig, KeyStats
from dataprep.build.run import build_index
from dataprep.build.summary import BuildSummary

__all__ = ["BuildConfig", "BuildSummary", "KeyStats", "build_index"]
