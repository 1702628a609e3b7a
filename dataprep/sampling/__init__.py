"""Training samples from indexed datasets: GPT windows in megatron-core order, blends, splits, T5
span corruption.

The arrays follow megatron-core `datasets/gpt_dataset.py` and `blended_megatron_dataset_builder.py`;
`build_gpt_samples(data_path, ...)` and `build_t5_samples(source, ...)` are the usual entry points.
"""

from dataprep.sampling.blend import (
    BlendedSamples,
    build_blending_indices,
    build_gpt_samples,
    parse_data_path,
    size_weights,
)
from dataprep.sampling.gpt import (
    GPTSamples,
    GPTSamplesConfig,
    build_document_index,
    build_sample_index,
    build_shuffle_index,
)
from dataprep.sampling.packed import PackedMasks, packed_masks
from dataprep.sampling.split import parse_split, split_ranges
from dataprep.sampling.t5_samples import T5Samples, build_t5_samples

__all__ = [
    "BlendedSamples",
    "GPTSamples",
    "GPTSamplesConfig",
    "PackedMasks",
    "T5Samples",
    "packed_masks",
    "build_blending_indices",
    "build_document_index",
    "build_gpt_samples",
    "build_sample_index",
    "build_shuffle_index",
    "build_t5_samples",
    "parse_data_path",
    "parse_split",
    "size_weights",
    "split_ranges",
]
