"""One training run, by component.

loop.py                   train(): the checks, setup, the steps, finish
step.py                   one optimizer step: forward and backward over the micro-batches
source.py                 the run's data source from its config (packed-data EOD, mT5 sentinels)
reporting.py              rank 0's start line, metrics file, progress bar and summary
optimizer.py              AdamW and its parameter groups, the LR schedule, apply_gradients
distributed_optimizer.py  ZeRO-1: AdamW states sharded over the data-parallel ranks
data.py                   GPT / T5 sources over the .bin/.idx datasets, the prefetching loader
batches.py                GPTBatch / T5Batch and their collate functions (shift, pad, packed masks)
preflight.py              data, length and flag checks that need no process group
resume.py                 what a run saves besides the weights (step, RNG) and --load
rng.py                    seeding and the global RNG states
metrics.py                the metrics JSONL file and the loss curve
memory.py                 the per-rank memory estimate
memory_measure.py         the measured peak memory of a few CPU training steps
dry_run.py                --dry-run: the estimate for the run's model and layout, as a table
"""
