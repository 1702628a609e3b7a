"""Seeding and the RNG states a checkpoint carries (Python, NumPy, torch CPU and CUDA)."""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    import numpy as np
    import torch

    legacy = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key", "pos"}, ...}
    state = {
        "python": random.getstate(),  # (version, 625 ints, None): plain values
        "numpy": {
            **legacy,
            "state": {
                "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
                "pos": int(legacy["state"]["pos"]),
            },
        },  # tensors: loads weights_only
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):  # this trainer's form; older checkpoints hold the tuple
        key = np.asarray(numpy_state["state"]["key"], dtype=np.int64).astype(np.uint32)
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": key}}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, torch.Tensor):  # `rng_state`'s form: this rank's GPU
            torch.cuda.set_rng_state(cuda)
        else:  # one per GPU (torch.cuda.get_rng_state_all, trainer.parallel's form under "cuda")
            index = torch.cuda.current_device()
            if index < len(cuda):
                torch.cuda.set_rng_state(cuda[index])
