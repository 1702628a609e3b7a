"""The toy_lambada task's data, found next to this file (so lm_eval runs from any directory).

toy_lambada.yaml names `load` as its `custom_dataset`; lm_eval calls it with the task's
`dataset_kwargs` and `metadata` and reads the "test" split of what it returns.
"""

from pathlib import Path

import datasets

DATA = Path(__file__).resolve().parent / "toy_lambada.jsonl"


def load(**_kwargs) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={"test": str(DATA)})
