"""Training samples from indexed datasets: GPT windows in megatron-core order, blends, splits.

See reference/formats.md section 3. `build_gpt_samples(data_path, ...)` is the usual entry point.
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
    PackedMasks,
    build_document_index,
    build_sample_index,
    build_shuffle_index,
    packed_masks,
)
from dataprep.sampling.split import parse_split, split_ranges

__all__ = [
    "BlendedSamples",
    "GPTSamples",
    "GPTSamplesConfig",
    "PackedMasks",
    "packed_masks",
    "build_blending_indices",
    "build_document_index",
    "build_gpt_samples",
    "build_sample_index",
    "build_shuffle_index",
    "parse_data_path",
    "parse_split",
    "size_weights",
    "split_ranges",
]
