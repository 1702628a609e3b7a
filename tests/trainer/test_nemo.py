"""export-nemo / import-nemo: NeMo 1.x archives of Megatron-GPT and Megatron-T5 (mT5).

The layout and names are NeMo's own, cited per test: NVIDIA/NeMo v1.11.0 (commit e856e973)
`nemo/core/connectors/save_restore_connector.py` (a tar of ".": ./model_config.yaml,
./model_weights.ckpt, tokenizer files as <uuid hex>_<name>, gzip'd before 1.7) and
`nemo/collections/nlp/parts/nlp_overrides.py` (./mp_rank_XX/model_weights.ckpt for TP > 1);
GPT key names as listed by NeMo v1.23.0 (commit d2283e36)
`scripts/nlp_language_modeling/convert_nemo_gpt_to_mcore.py` `build_key_mapping`; T5 names as
written by NeMo v1.13.0 (commit 1ff05cce) `scripts/nlp_language_modeling/hf_t5-v1_1_to_nemo.py`.
Round trips are bit-identical, the mT5 archive at TP=2 fills masks as its HF export does, the
tokenizer identity carries over both ways, and bad archives are one-line errors."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from dataprep.cli import main as cli_main
from tests.trainer.trainer_fixtures import train_tiny_gpt
from trainer.checkpoint import load_config, merge_checkpoint, resolve_checkpoint
from trainer.train import TrainConfig, run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def _gpt_names(layers: int) -> set[str]:
    """The legacy Megatron-GPT keys of NeMo v1.23.0 convert_nemo_gpt_to_mcore.py (d2283e36)
    build_key_mapping, for a model with a tied head."""
    names = {"model.language_model.embedding.word_embeddings.weight",
             "model.language_model.embedding.position_embeddings.weight",
             "model.language_model.encoder.final_layernorm.weight",
             "model.language_model.encoder.final_layernorm.bias"}  # fmt: skip
    for i in range(layers):
        p = f"model.language_model.encoder.layers.{i}."
        for op in (
            "input_layernorm",
            "self_attention.query_key_value",
            "self_attention.dense",
            "post_attention_layernorm",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        ):
            names |= {p + op + ".weight", p + op + ".bias"}  # fmt: skip
    return names


def _t5_names(enc: int, dec: int) -> set[str]:
    """The keys NeMo v1.13.0 hf_t5-v1_1_to_nemo.py (1ff05cce) writes for an HF T5 v1.1 / mT5."""
    e = "enc_dec_model.enc_dec_model"
    names = {
        "enc_dec_model.tokens_head.weight",
        "enc_dec_model.encoder_embedding.word_embeddings.weight",
        "enc_dec_model.decoder_embedding.word_embeddings.weight",
        "enc_dec_model.encoder_relative_position_embedding.relative_position_embedding.weight",
        "enc_dec_model.decoder_relative_position_embedding.relative_position_embedding.weight",
        f"{e}.encoder.model.final_layernorm.weight",
        f"{e}.decoder.model.final_layernorm.weight",
    }
    for stack, n in (("encoder", enc), ("decoder", dec)):
        for b in range(n):
            p = f"{e}.{stack}.model.layers.{b}."
            names |= {
                p + x + ".weight"
                for x in (
                    "self_attention.query_key_value",
                    "self_attention.dense",
                    "mlp.dense_h_to_4h",
                    "mlp.dense_h_to_4h_2",
                    "mlp.dense_4h_to_h",
                    "input_layernorm",
                    "post_attention_layernorm",
                )
            }
            if stack == "decoder":
                names |= {
                    p + x + ".weight"
                    for x in (
                        "inter_attention.query",
                        "inter_attention.key_value",
                        "inter_attention.dense",
                        "post_inter_attention_layernorm",
                    )
                }
    return names  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("nemo")
    gpt, _ = train_tiny_gpt(d / "gpt", tp=2, docs=30)
    toy = ROOT / "pipelines" / "toy" / "mc4"
    assert cli_main(["build-index", "--input", str(toy), "--output-prefix", str(d / "mc4"),
                     "--tokenizer", "mt5-toy", "--append-eod", "--no-progress",
                     "--languages", "de,fr"]) == 0  # fmt: skip
    assert run(TrainConfig(data_path=(str(d / "mc4_text_document"),), model="mt5-tiny",
                           encoder_seq_length=64, train_iters=2, micro_batch_size=2, lr=1e-3,
                           num_threads=1, tensor_model_parallel_size=2, progress=False,
                           save=str(d / "mt5"), hidden_dropout=0.0,
                           attention_dropout=0.0)) == 0  # fmt: skip
    return {"gpt": gpt, "mt5": d / "mt5"}


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted(m.name for m in tar.getmembers())


def _same(a: Path, b: Path) -> None:
    sa, _ = merge_checkpoint(resolve_checkpoint(a))
    sb, _ = merge_checkpoint(resolve_checkpoint(b))
    assert set(sa) == set(sb)
    v = load_config(resolve_checkpoint(a)).vocab_size
    for k in sa:  # padded rows differ in number between TP sizes; the real ones are identical
        assert torch.equal(
            sa[k][:v] if sa[k].shape[0] != sb[k].shape[0] else sa[k],
            sb[k][:v] if sa[k].shape[0] != sb[k].shape[0] else sb[k],
        ), k


@pytest.mark.parametrize("tp", [1, 2])
def test_gpt_archive_has_nemos_layout_and_names_and_round_trips(checkpoints, tmp_path, tp):
    out = tmp_path / "gpt.nemo"
    assert cli_main(["export-nemo", str(checkpoints["gpt"]), str(out),
                     "--tensor-model-parallel-size", str(tp)]) == 0  # fmt: skip
    members = _members(out)
    weights = (["./model_weights.ckpt"] if tp == 1
               else [f"./mp_rank_{r:02d}/model_weights.ckpt" for r in range(tp)])  # fmt: skip
    assert "./model_config.yaml" in members and all(w in members for w in weights)
    with tarfile.open(out) as tar:
        cfg = yaml.safe_load(tar.extractfile("./model_config.yaml"))
        sd = torch.load(io.BytesIO(tar.extractfile(weights[0]).read()), weights_only=True)
    c = load_config(resolve_checkpoint(checkpoints["gpt"]))
    assert cfg["target"].endswith("megatron_gpt_model.MegatronGPTModel")
    assert (cfg["num_layers"], cfg["hidden_size"], cfg["num_attention_heads"]) == (
        c.n_layer,
        c.n_embd,
        c.n_head,
    )
    assert cfg["tensor_model_parallel_size"] == tp
    for field in ("vocab_file", "merge_file"):
        name = cfg["tokenizer"][field]
        assert re.fullmatch(r"nemo:[0-9a-f]{32}_(vocab\.json|merges\.txt)", name)
        assert "./" + name[len("nemo:") :] in members
    assert set(sd) == _gpt_names(c.n_layer)
    assert (
        sd["model.language_model.embedding.word_embeddings.weight"].shape[0]
        == {1: 50304, 2: 50432 // 2}[tp]
    )  # padded to 128 x TP, split over the ranks
    assert cli_main(["import-nemo", str(out), str(tmp_path / "back")]) == 0
    _same(checkpoints["gpt"], tmp_path / "back")


def test_a_gzipped_archive_of_nemo_before_1_7_reads_too(checkpoints, tmp_path):
    out = tmp_path / "gpt.nemo"
    assert cli_main(["export-nemo", str(checkpoints["gpt"]), str(out)]) == 0
    old = tmp_path / "old.nemo"
    old.write_bytes(gzip.compress(out.read_bytes()))
    assert cli_main(["import-nemo", str(old), str(tmp_path / "back")]) == 0
    _same(checkpoints["gpt"], tmp_path / "back")


def test_mt5_archive_at_tp2_has_the_converters_names_and_fills_masks_as_its_hf_export(
    checkpoints, tmp_path
):
    from trainer.inference.fill_mask import fill_mask, masked_ids
    from trainer.inference.loading import load_for_inference

    out = tmp_path / "mt5.nemo"
    assert cli_main(["export-nemo", str(checkpoints["mt5"]), str(out),
                     "--tensor-model-parallel-size", "2"]) == 0  # fmt: skip
    with tarfile.open(out) as tar:
        cfg = yaml.safe_load(tar.extractfile("./model_config.yaml"))
        sd0 = torch.load(io.BytesIO(tar.extractfile("./mp_rank_00/model_weights.ckpt").read()),
                         weights_only=True)  # fmt: skip
    c = load_config(resolve_checkpoint(checkpoints["mt5"]))
    assert cfg["target"].endswith("megatron_t5_model.MegatronT5Model")
    assert set(sd0) == _t5_names(c.num_layers, c.num_decoder_layers)
    for stack in ("encoder", "decoder"):  # the settings the converter's base config relies on
        s = cfg[stack]
        assert (s["position_embedding_type"], s["normalization"], s["activation"], s["bias"],
                s["megatron_legacy"], s["normalize_attention_scores"]) == (
            "relative", "rmsnorm", "geglu", False, True, False)  # fmt: skip
    assert cfg["share_token_embeddings"] and not cfg["share_decoder_tokens_head_embeddings"]
    assert re.fullmatch(r"nemo:[0-9a-f]{32}_spiece\.model", cfg["tokenizer"]["model"])
    assert cli_main(["import-nemo", str(out), str(tmp_path / "back")]) == 0
    _same(checkpoints["mt5"], tmp_path / "back")
    # fill-mask on the .nemo import = transformers' greedy generate on the HF export
    assert cli_main(["export-hf", str(checkpoints["mt5"]), str(tmp_path / "hf")]) == 0
    import transformers

    hf = transformers.MT5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    model, tok, _ = load_for_inference(tmp_path / "back")
    assert tok.name == "mt5-toy"  # the shipped tokenizer's file: its name comes back
    for prompt in ["Die Hauptstadt von Frankreich ist <mask>.", "Le <mask> est <mask> et <mask>"]:
        answer = fill_mask(model, tok, prompt, max_new_tokens=10)
        ids, _ = masked_ids(prompt, tok)
        theirs = hf.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=10)[0]
        theirs = theirs[1:].tolist()
        if theirs and theirs[-1] == tok.eos_id:
            theirs = theirs[:-1]
        assert [t for t, _, _ in answer["completion"]["tokens"]] == theirs


def test_a_tokenizer_not_shipped_is_kept_with_the_checkpoint(checkpoints, tmp_path, capsys):
    out = tmp_path / "gpt.nemo"
    assert cli_main(["export-nemo", str(checkpoints["gpt"]), str(out)]) == 0
    folder = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(folder, filter="data")
    (vocab,) = folder.glob("*_vocab.json")
    vocab.write_text(json.dumps(json.loads(vocab.read_text()), indent=1))  # same ids, not "gpt2"
    changed = tmp_path / "changed.nemo"
    with tarfile.open(changed, "w:") as tar:
        tar.add(folder, arcname=".")
    capsys.readouterr()
    assert cli_main(["import-nemo", str(changed), str(tmp_path / "back")]) == 0
    kept = tmp_path / "back" / "tokenizer"
    assert (kept / "vocab.json").is_file() and (kept / "merges.txt").is_file()
    assert f"tokenizer {kept.absolute()}" in capsys.readouterr().out
    assert cli_main(["generate", str(tmp_path / "back"), "--prompt", "Hello",
                     "--tokens-to-generate", "3", "--greedy"]) == 0  # fmt: skip


def _archive(tmp_path: Path, checkpoints, edit) -> Path:
    out = tmp_path / "gpt.nemo"
    assert cli_main(["export-nemo", str(checkpoints["gpt"]), str(out)]) == 0
    folder = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(folder, filter="data")
    edit(folder)
    bad = tmp_path / "bad.nemo"
    with tarfile.open(bad, "w:") as tar:
        tar.add(folder, arcname=".")
    return bad


def _set(field, value):
    def edit(folder: Path) -> None:
        cfg = yaml.safe_load((folder / "model_config.yaml").read_text())
        cfg[field] = value
        (folder / "model_config.yaml").write_text(yaml.safe_dump(cfg))

    return edit


class _Evil:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').close()",))


def _poison(folder: Path) -> None:
    sd = torch.load(folder / "model_weights.ckpt", weights_only=True)
    sd["evil"] = _Evil()
    torch.save(sd, folder / "model_weights.ckpt")


ERRORS = [
    ("missing", None, 2, "no such file"),
    ("not a tar", "text", 1, "not a .nemo archive"),
    ("no config", lambda f: (f / "model_config.yaml").unlink(), 1, "no model_config.yaml"),
    ("no weights", lambda f: (f / "model_weights.ckpt").unlink(), 1, "no model_weights.ckpt"),
    ("rotary", _set("position_embedding_type", "rope"), 1, "rotary positions"),
    ("swiglu", _set("activation", "swiglu"), 1, "an activation other than GELU"),
    ("untied", _set("share_embeddings_and_output_weights", False), 1, "an untied head"),
    ("poisoned", _poison, 1, "its pickle asks for exec"),
]  # fmt: skip


@pytest.mark.parametrize("what, how, code, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_archives_are_one_line_and_write_nothing(checkpoints, tmp_path, capsys, monkeypatch,
                                                     what, how, code, message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    if how is None:
        src = tmp_path / "nothing.nemo"
    elif how == "text":
        src = tmp_path / "text.nemo"
        src.write_text("not an archive")
    else:
        src = _archive(tmp_path, checkpoints, how)
    capsys.readouterr()
    assert cli_main(["import-nemo", str(src), str(tmp_path / "out")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    shutil.rmtree(tmp_path / "unpacked", ignore_errors=True)
