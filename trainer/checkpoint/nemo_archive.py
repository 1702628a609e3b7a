"""The `.nemo` archive itself: reading its members and weights, writing one, and its tokenizer.

`Archive` opens a NeMo 1.x `.nemo` (a tar, gzip'd before NeMo 1.7) and reads its
`model_config.yaml` and per-TP-rank `model_weights.ckpt` files (weights_only, through
`trainer.checkpoint.safe_pickle.load_pt`); `write_archive` writes one as NeMo >= 1.7 does. The
tokenizer helpers put our tokenizer's files into an archive and, on import, map files equal to a
shipped tokenizer (sha256) back to its name. The layout is in `trainer.checkpoint.nemo`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from dataprep.errors import DataprepError, UsageError
from trainer.checkpoint.safe_pickle import load_pt

NEMO_VERSION = "1.11.0"
WEIGHTS = "model_weights.ckpt"
CONFIG = "model_config.yaml"
RANK = re.compile(r"(?:mp_rank_(\d{2})|tp_rank_(\d{2})_pp_rank_(\d{3}))/" + re.escape(WEIGHTS))


# --------------------------------------------------------------------------------- the archive
class Archive:
    """A `.nemo` file opened for reading: its config and its members by name (no "./")."""

    def __init__(self, path: str | os.PathLike) -> None:
        import yaml

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such file")
        try:
            self.tar = tarfile.open(self.path, "r:*")  # plain tar, or gzip'd (NeMo < 1.7)
            self.members = {
                m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()
            }
        except (tarfile.TarError, EOFError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataprepError(
                f"{self.path}: not a .nemo archive (a tar, plain or gzip'd): {first}"
            ) from None
        if CONFIG not in self.members:
            raise DataprepError(
                f"{self.path}: no {CONFIG} in the archive (found: "
                f"{', '.join(sorted(self.members)[:5]) or 'nothing'})"
            )
        try:
            self.config = yaml.safe_load(self.read(CONFIG)) or {}
        except yaml.YAMLError as e:
            raise DataprepError(f"{self.path}:{CONFIG}: not YAML: {e}") from None
        if not isinstance(self.config, dict):
            raise DataprepError(f"{self.path}:{CONFIG}: not a mapping")

    def read(self, name: str) -> bytes:
        f = self.tar.extractfile(self.members[name])
        if f is None:
            raise DataprepError(f"{self.path}: {name} is not a file")
        try:
            return f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataprepError(f"{self.path}: {name}: truncated archive ({e})") from None

    def artifact(self, value: Any, what: str) -> bytes:
        """The bytes of a file the config names as `nemo:<name>`."""
        if not isinstance(value, str) or not value.startswith("nemo:"):
            raise DataprepError(
                f"{self.path}: {what} is {value!r}, not a file inside the archive (nemo:...)"
            )
        name = value[len("nemo:") :]
        if name not in self.members:
            raise DataprepError(f"{self.path}: {what} names {name}, which the archive lacks")
        return self.read(name)

    def weights(self) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
        """{(tp, pp): state dict}, every rank file loaded (weights_only)."""
        out = {}
        if WEIGHTS in self.members:
            out[(0, 0)] = self.read_weights(WEIGHTS)
        for name in self.members:
            m = RANK.fullmatch(name)
            if m:
                tp = int(m.group(1) if m.group(1) is not None else m.group(2))
                out[(tp, int(m.group(3) or 0))] = self.read_weights(name)
        if not out:
            raise DataprepError(
                f"{self.path}: no {WEIGHTS} (nor mp_rank_XX/{WEIGHTS}) in the archive"
            )
        tp, pp = 1 + max(r[0] for r in out), 1 + max(r[1] for r in out)
        missing = [(t, p) for t in range(tp) for p in range(pp) if (t, p) not in out]
        if missing:
            raise DataprepError(f"{self.path}: weights of (tp, pp) ranks {missing} are missing")
        return out

    def read_weights(self, name: str) -> dict[str, torch.Tensor]:
        sd = load_pt(io.BytesIO(self.read(name)), what="NeMo weights file",
                     name=f"{self.path}:{name}")  # fmt: skip
        if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
            raise DataprepError(f"{self.path}:{name}: not a state dict")
        return sd


def write_archive(out: Path, config: dict, ranks: list[dict[str, torch.Tensor]],
                  files: dict[str, bytes]) -> None:  # fmt: skip
    """A .nemo as NeMo >= 1.7 writes it (plain tar of "."), under a temporary name, renamed."""
    import yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        (folder / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if len(ranks) == 1:
            torch.save(ranks[0], folder / WEIGHTS)
        else:
            for r, sd in enumerate(ranks):
                (folder / f"mp_rank_{r:02d}").mkdir()
                torch.save(sd, folder / f"mp_rank_{r:02d}" / WEIGHTS)
        part = Path(tmp) / "archive.nemo"
        with tarfile.open(part, "w:") as tar:
            tar.add(folder, arcname=".")
        os.replace(part, out)


def stored_name(basename: str) -> str:
    return f"{uuid.uuid4().hex}_{basename}"


# --------------------------------------------------------------------------------- tokenizers
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shipped(files: dict[str, bytes]) -> str | None:
    """The name of the shipped tokenizer whose files these are, if any."""
    from dataprep.tokenizers.base import ASSETS_DIR

    candidates = {
        "gpt2": {"vocab.json": ASSETS_DIR / "gpt2" / "vocab.json",
                 "merges.txt": ASSETS_DIR / "gpt2" / "merges.txt"},
        "mt5-toy": {"spiece.model": ASSETS_DIR / "mt5-toy" / "spiece.model"},
    }  # fmt: skip
    for name, paths in candidates.items():
        if set(paths) == set(files) and all(
            p.is_file() and _sha(p.read_bytes()) == _sha(files[k]) for k, p in paths.items()
        ):
            return name
    return None


def tokenizer_files(tok) -> dict[str, bytes]:
    """The files of one of our tokenizers, by their usual basename."""
    if getattr(tok, "kind", "") == "bytelevel-bpe":
        vocab = Path(tok._vocab_json)
        return {"vocab.json": vocab.read_bytes(),
                "merges.txt": (vocab.parent / "merges.txt").read_bytes()}  # fmt: skip
    model_file = getattr(tok, "model_file", None)
    if model_file:
        return {"spiece.model": Path(model_file).read_bytes()}
    raise DataprepError(
        f"tokenizer {tok.name}: only GPT-2 BPE files (vocab.json + merges.txt) and SentencePiece "
        "models go into a .nemo"
    )


def import_tokenizer(files: dict[str, bytes], root: Path) -> str:
    """A tokenizer spec for files read from an archive: a shipped name, or the files kept."""
    name = _shipped(files)
    if name:
        return name
    keep = root / "tokenizer"
    keep.mkdir(parents=True, exist_ok=True)
    for base, data in files.items():
        (keep / base).write_bytes(data)
    return str((keep / "spiece.model") if "spiece.model" in files else keep)
