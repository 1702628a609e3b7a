"""`build_index`: read documents -> tokenize -> write Megatron `.bin/.idx` (formats.md §1, §2).

Outputs `{output_prefix}_{key}_{document|sentence}.bin/.idx` per JSON key, as Megatron's
preprocess_data.py, each with a manifest `{prefix}.json` (counts, skips by reason, inputs with size
and sha256, tokenizer identity, largest token id) and `{prefix}.provenance.npy` (int64 rows `(input
index, line)`, one per written document).

Modules, one concern each: `config` (BuildConfig, counts, summary), `plan` (the inputs), `read`
(one input file -> blocks or texts), `encode` (the task function: parse and tokenize),
`executor_local` (the process pool), `sink` (ordered writing, counts, provenance, progress),
`state` (the --resume checkpoint), `run` (build_index).

Parallelism: the main process decompresses each JSON Lines file and cuts it into blocks of whole
lines (about `chunk_bytes` each, line numbers counted); `workers` processes parse, check and
tokenize the blocks (`encode.run_task`) and the main process writes their results in submission
order, so the bytes do not depend on `workers`. Bad records found by a worker are raised or
counted exactly as a sequential read would (`readers.base.CollectedRecordErrors`).
Resumability: `.bin` data goes to temporary names; after each input file the writers' state is
saved to `{output_prefix}.dataprep-build/`, and `--resume` truncates back to the last finished
file and continues there. Real names appear only when the build completes.
"""

from dataprep.build.config import BuildConfig, KeyStats
from dataprep.build.run import build_index
from dataprep.build.summary import BuildSummary

__all__ = ["BuildConfig", "BuildSummary", "KeyStats", "build_index"]
