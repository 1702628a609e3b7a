"""Reading `.pt` / `.ckpt` files without running what they carry.

Every torch pickle any command reads (our checkpoints, Megatron-LM's, NeMo's) goes through
`load_pt`: `torch.load(weights_only=True)`, which builds only tensors, primitive values and
containers, plus the globals named here:

- numpy arrays (`_reconstruct`, `ndarray`, `dtype` and its classes): NumPy RNG states in our
  checkpoints written before they were stored as tensors;
- `argparse.Namespace` and `types.SimpleNamespace`: Megatron-LM's `args` (and the converters');
- inert stand-ins for classes that exist only in Megatron-LM (its enums, e.g.
  `megatron.model.enums.AttnMaskType`): a stand-in records the value it was built from and can
  do nothing else, so the file reads without Megatron-LM installed;
- whatever the caller adds (`allow`).

Any other global (`os.system`, `builtins.eval`, a class with a `__reduce__`) stops the load before
it is called: a `DataprepError` names the file and the global it asked for (exit 1).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import types
import zipfile
from collections.abc import Iterable
from typing import IO, Any

from dataprep.errors import DataprepError


class StandIn:
    """An inert placeholder for a class of another project: keeps its constructor arguments and
    state for inspection, runs nothing."""

    _name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self._name} {self.args!r}>"


def stand_in(name: str) -> tuple[type, str]:
    """(an inert class for the dotted `name`, `name`) for torch's safe-globals list."""
    cls = type(name.rsplit(".", 1)[-1], (StandIn,), {"_name": name})
    return cls, name


# Megatron-LM's classes found in its checkpoints' `args` (enums of the attention mask, the model
# type, the position embedding): inert here
MEGATRON_STAND_INS = (
    "megatron.model.enums.AttnMaskType",
    "megatron.model.enums.AttnType",
    "megatron.model.enums.LayerType",
    "megatron.model.enums.PositionEmbeddingType",
    "megatron.core.enums.ModelType",
    "megatron.core.transformer.enums.AttnMaskType",
    "megatron.core.transformer.enums.AttnBackend",
    "megatron.core.transformer.enums.ModelType",
    "megatron.model.ModelType",
    "megatron.core.models.common.embeddings.rope_utils.RotaryEmbeddingType",
    "megatron.core.datasets.utils.Split",
)


def _numpy_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                          "uint16", "uint32", "uint64", "float16", "float32",
                                          "float64")]  # fmt: skip
    out: list = [core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]
    if hasattr(np, "_core"):  # numpy 2 pickles as numpy._core; older files name numpy.core
        out.append((core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"))
    return out


def load_pt(
    source: str | os.PathLike | IO[bytes],
    *,
    allow: Iterable = (),
    what: str = "file",
    name: str | None = None,
) -> Any:
    """torch.load(source, weights_only=True) with the globals above; one-line errors naming
    `name` (default: the path)."""
    import torch

    if isinstance(source, str | os.PathLike):
        source = os.fspath(source)
    path = name or (source if isinstance(source, str) else "<stream>")
    allowed = [*_numpy_globals(), argparse.Namespace, types.SimpleNamespace, *allow]
    allowed += [stand_in(n) for n in MEGATRON_STAND_INS]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # not a pickle at all, or a broken one
            why = re.search(r"Unpickler error:\s*([^\n]+)", str(e))
            detail = why.group(1).strip() if why else type(e).__name__
            raise DataprepError(
                f"{path}: not a readable torch {what} (truncated or corrupt?): {detail[:200]}"
            ) from None
        asked = found.group(1)
        raise DataprepError(
            f"{path}: refused to load this {what}: its pickle asks for {asked}, which a "
            "checkpoint has no reason to hold (nothing in the file was run)"
        ) from None
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataprepError(
            f"{path}: not a readable torch {what} (truncated or corrupt?): {first}"
        ) from None
