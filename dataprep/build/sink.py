"""The sink: routes every task result, in submission order, to the outputs of its keys
(`output.KeyOutput`) and reports the progress; it keeps no counts of its own but the text bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dataprep.build.output import KeyOutput
from dataprep.build.progress import Progress
from dataprep.build.tasks import Encoded, PartResult


class Sink:
    """Writes task results and Ray partials to the outputs, key by key, in the order given."""

    def __init__(self, outputs: Mapping[str, KeyOutput], progress: Progress) -> None:
        self.outputs = outputs
        self.progress = progress
        self.text_bytes = 0  # text tokenized by this run

    def write(self, file_index: int, encoded: Encoded) -> int:
        """Write one task's documents for every key; returns how many documents it held (the
        largest count over the keys)."""
        for key, count in encoded.empty_text.items():
            self.outputs[key].skip("empty_text", count)
        documents = tokens = text_bytes = 0
        for key, result in encoded.keys.items():
            n, t = self.outputs[key].write(file_index, result)
            documents, tokens = max(documents, n), tokens + t
            text_bytes += result.text_bytes
        self.text_bytes += text_bytes
        self.progress.update(documents, tokens, text_bytes)
        return documents

    def append_part(self, file_index: int, part_dir: Path, result: PartResult) -> int:
        """Append the partial datasets of a Ray task (`output.KeyOutput.append_part`)."""
        documents = tokens = 0
        for key, output in self.outputs.items():
            n, t = output.append_part(file_index, part_dir, result.stats[key])
            documents, tokens = max(documents, n), tokens + t
        self.text_bytes += result.text_bytes
        self.progress.update(documents, tokens, result.text_bytes)
        return documents
