"""`dataprep export-nemo CKPT OUT.nemo`: a GPT or mT5 checkpoint as a NeMo 1.x archive."""

from __future__ import annotations

import argparse

HELP = "write a GPT or mT5 checkpoint as a NeMo 1.x .nemo (Megatron-GPT / Megatron-T5) at any TP"
DESCRIPTION = """\
Write a checkpoint as NeMo 1.x saves a model: a tar of ./model_config.yaml (target, shape,
tokenizer section naming its files as nemo:<id>_<name>), ./model_weights.ckpt (TP=1) or
./mp_rank_XX/model_weights.ckpt for each of the --tensor-model-parallel-size ranks, and the
tokenizer files. A GPT becomes MegatronGPTModel (Megatron's language_model keys under model.,
GPT-2 BPE files); an mT5 becomes MegatronT5Model in the layout of NeMo's HF T5 v1.1 / mT5
converter (relative position buckets, RMSNorm, gated GELU, untied tokens_head, megatron_legacy
QKV, SentencePiece model with its sentinels). The vocabulary is padded to a multiple of 128 x
TP. The file is written under a temporary name and renamed when whole.

examples:
  dataprep export-nemo out/smoke/gpt/checkpoint out/gpt.nemo
  dataprep export-nemo out/smoke/mt5/checkpoint out/mt5.nemo --tensor-model-parallel-size 2"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="GPT / mT5 checkpoint or --save root")
    p.add_argument("output", metavar="OUT.nemo", help="the archive to write")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1,
                   help="TP ranks to shard into (1)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.nemo")


def run(args: argparse.Namespace) -> int:
    import os

    from dataprep.errors import UsageError
    from trainer.checkpoint.nemo import export_nemo

    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    out = export_nemo(args.checkpoint, args.output, tp=args.tensor_model_parallel_size,
                      overwrite=args.overwrite)  # fmt: skip
    tp = out["tp"]
    files = "model_weights.ckpt" if tp == 1 else f"mp_rank_00..{tp - 1:02d}/model_weights.ckpt"
    print(
        f"{out['path']}: {out['architecture']}, TP={tp} ({files}), vocabulary "
        f"{out['config'].vocab_size:,} padded to {out['padded_vocab_size']:,}, tokenizer "
        f"{out['tokenizer']}, from {out['source']}"
    )
    return 0
