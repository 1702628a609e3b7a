"""dataprep: raw text -> Megatron indexed datasets -> GPT / T5 samples -> training."""

__version__ = "0.1.0"
