"""import-megatron / export-megatron against independent oracles: the Megatron-LM converters of
transformers 4.46.3 (removed in transformers 5), run unchanged in their own virtualenv:
`models/megatron_gpt2/convert_megatron_gpt2_checkpoint.py` (the 345M zip or a .pt -> HF GPT-2) and
`checkpoint_reshaping_and_interoperability.py` (HF GPT-2 <-> Megatron at any TP/PP).

- ours -> Megatron (export-megatron, TP=1 and 2) -> their Megatron->HF: their model's logits are
  ours (1e-4);
- HF -> Megatron by their script at TP=1, TP=2 and TP=2 x PP=2 -> import-megatron: our logits are
  the HF model's;
- the 345M release layout (a zip of release/mp_rank_00/model_optim_rng.pt), with and without args,
  and with the fused QKV rewritten in the row order of checkpoint_version 0, 1.0 and 2.0: their zip
  converter and our import-megatron give the same logits;
- errors: a missing path, a zip without mp_rank_00, other architectures, missing shape args, a
  truncated file: one line, the README's exit code, nothing written.

The oracle venv has only transformers 4.46.3 and the tokenizers / huggingface_hub versions it pins
(torch, numpy, safetensors come from this environment through a .pth file). Nothing is
downloaded at run time but those wheels: the scripts' `AutoTokenizer.from_pretrained("gpt2")` is
pointed at our shipped GPT-2 files, and their HF->Megatron direction, which imports Megatron-LM's
`_vocab_size_with_padding`, gets that five-line function from a stub package (its rule: pad up to a
multiple of make_vocab_size_divisible_by x TP). Their `torch.load` calls need the pre-2.6 default
(`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`: files we wrote ourselves).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dataprep.cli import main as cli_main
from tests.trainer.trainer_fixtures import markov_docs, train_tiny_gpt, write_dataset

ROOT = Path(__file__).resolve().parents[2]
ORACLE_PINS = ["transformers==4.46.3", "tokenizers==0.20.3", "huggingface_hub==0.26.5"]
pytestmark = [pytest.mark.slow]

ORACLE_MODULE = "transformers.models.megatron_gpt2"
# runs one of the oracle scripts with the tokenizer it asks the hub for taken from a local folder
LAUNCH = textwrap.dedent("""
    import runpy, sys
    import transformers
    local = sys.argv.pop(1)
    original = transformers.AutoTokenizer.from_pretrained
    transformers.AutoTokenizer.from_pretrained = staticmethod(
        lambda name, *a, **k: original(local, *a, **k))
    module = sys.argv.pop(1)
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__")
""")
LOGITS = textwrap.dedent("""
    import sys, numpy as np, torch, transformers
    model = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()
    ids = torch.tensor(np.load(sys.argv[2]))
    with torch.no_grad():
        np.save(sys.argv[3], model(ids).logits.numpy())
""")
VOCAB_PADDING = textwrap.dedent("""
    def _vocab_size_with_padding(orig_vocab_size, args, logging_enabled=True):
        multiple = args.make_vocab_size_divisible_by * args.tensor_model_parallel_size
        return -(-orig_vocab_size // multiple) * multiple
""")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    d = tmp_path_factory.mktemp("oracle")
    venv = d / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(site), *ORACLE_PINS], check=True, capture_output=True,
                       timeout=600)  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot install the oracle's {ORACLE_PINS}: {e}")
    (site / "zz_dataprep_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    stub = d / "megatron_stub"  # Megatron-LM's padding helper for the HF->Megatron direction
    for pkg in ("megatron", "megatron/core", "megatron/training", "megatron/training/tokenizer"):
        (stub / pkg).mkdir(parents=True)
        (stub / pkg / "__init__.py").write_text("")
    (stub / "megatron/core/package_info.py").write_text("__version__ = '0.16.1'\n")
    (stub / "megatron/training/tokenizer/tokenizer.py").write_text(VOCAB_PADDING)
    tok = d / "gpt2-tokenizer"  # the GPT-2 files the scripts would download, from our assets
    code = ("import sys, transformers; transformers.GPT2Tokenizer(sys.argv[1], sys.argv[2])"
            ".save_pretrained(sys.argv[3])")  # fmt: skip
    assets = ROOT / "tokenizer_assets" / "gpt2"
    subprocess.run([str(py), "-c", code, str(assets / "vocab.json"), str(assets / "merges.txt"),
                    str(tok)], check=True, capture_output=True)  # fmt: skip
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "HF_HUB_OFFLINE": "1"}
    return {"python": str(py), "stub": str(stub), "tokenizer": str(tok), "env": env, "dir": d}


def _oracle_run(oracle, script: str, *args: str) -> str:
    out = subprocess.run([oracle["python"], "-c", LAUNCH, oracle["tokenizer"],
                          f"{ORACLE_MODULE}.{script}", *args], env=oracle["env"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def _hf_logits(oracle, folder: Path, ids: np.ndarray, tmp: Path) -> np.ndarray:
    np.save(tmp / "ids.npy", ids)
    subprocess.run([oracle["python"], "-c", LOGITS, str(folder), str(tmp / "ids.npy"),
                    str(tmp / "logits.npy")], env=oracle["env"], check=True,
                   capture_output=True)  # fmt: skip
    return np.load(tmp / "logits.npy")


def _our_logits(ckpt: Path, ids: np.ndarray) -> np.ndarray:
    from trainer.inference.loading import load_for_inference

    model, _, _ = load_for_inference(ckpt)
    with torch.no_grad():
        out = model(torch.tensor(ids))
    return out[..., : model.config.vocab_size].float().numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A gpt-tiny trained 3 steps at TP=2 (so every tensor is non-trivial), 4 heads."""
    ckpt, _ = train_tiny_gpt(tmp_path_factory.mktemp("megatron"), tp=2, steps=3, docs=30)
    ids = np.random.default_rng(0).integers(0, 50257, size=(2, 24))
    return ckpt, ids


@pytest.mark.parametrize("tp", [1, 2])
def test_their_megatron_to_hf_reads_our_export(oracle, trained, tmp_path, tp):
    ckpt, ids = trained
    out = tmp_path / "mlm"
    assert cli_main(["export-megatron", str(ckpt), str(out), "--tensor-model-parallel-size",
                     str(tp)]) == 0  # fmt: skip
    hf = tmp_path / "hf"
    _oracle_run(oracle, "checkpoint_reshaping_and_interoperability",
                "--convert_checkpoint_from_megatron_to_transformers",
                "--load_path", str(out / "release"), "--save_path", str(hf),
                "--tokenizer_name", oracle["tokenizer"])  # fmt: skip
    theirs = _hf_logits(oracle, hf, ids, tmp_path)
    ours = _our_logits(ckpt, ids)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < 1e-4


def _hf_source(oracle, trained, tmp: Path) -> Path:
    """An HF GPT-2 folder with pytorch_model.bin (what their HF->Megatron direction reads)."""
    ckpt, _ = trained
    assert cli_main(["export-hf", str(ckpt), str(tmp / "hf-st")]) == 0
    code = ("import sys, transformers; m = transformers.GPT2LMHeadModel.from_pretrained("
            "sys.argv[1]); m.save_pretrained(sys.argv[2], safe_serialization=False)")  # fmt: skip
    subprocess.run([oracle["python"], "-c", code, str(tmp / "hf-st"), str(tmp / "hf-bin")],
                   env=oracle["env"], check=True, capture_output=True)  # fmt: skip
    return tmp / "hf-bin"


@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 1), (2, 2)])
def test_our_import_reads_their_hf_to_megatron(oracle, trained, tmp_path, capsys, tp, pp):
    hf = _hf_source(oracle, trained, tmp_path)
    save = tmp_path / "mlm"
    _oracle_run(oracle, "checkpoint_reshaping_and_interoperability", "--load_path", str(hf),
                "--save_path", str(save), "--target_tensor_model_parallel_size", str(tp),
                "--target_pipeline_model_parallel_size", str(pp), "--megatron-path",
                oracle["stub"])  # fmt: skip
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "release"
    capsys.readouterr()
    assert cli_main(["import-megatron", str(save), str(tmp_path / "ours")]) == 0
    line = capsys.readouterr().out
    assert f"checkpoint_version 3, TP={tp} PP={pp} merged" in line
    _, ids = trained
    theirs = _hf_logits(oracle, hf, ids, tmp_path)
    ours = _our_logits(tmp_path / "ours", ids)
    assert np.abs(theirs - ours).max() < 1e-4


def _reorder_qkv(t: torch.Tensor, version: float, heads: int) -> torch.Tensor:
    """Rows of version 3.0 ([heads, 3, hd]) rewritten in the order `version` stored them."""
    rest = t.shape[1:]
    hd = t.shape[0] // (3 * heads)
    x = t.view(heads, 3, hd, *rest)
    if version == 0:
        return x.transpose(0, 1).reshape(t.shape).contiguous()  # [3, heads, hd]
    if version == 1.0:
        return x.transpose(1, 2).reshape(t.shape).contiguous()  # [heads, hd, 3]
    return t.clone()


def _release_zip(src: Path, zip_path: Path, *, version: float, keep_args: bool) -> None:
    state = torch.load(src / "release" / "mp_rank_00" / "model_optim_rng.pt", weights_only=False)
    heads = state["args"].num_attention_heads
    encoder = state["model"]["language_model"]["encoder"]
    for key in [k for k in encoder if "query_key_value" in k]:
        encoder[key] = _reorder_qkv(encoder[key], version, heads)
    if version < 2:  # the older releases call the stack and the attention differently
        state["model"]["language_model"]["transformer"] = {
            k.replace("self_attention.", "attention."): v for k, v in encoder.items()
        }
        del state["model"]["language_model"]["encoder"]
    if version == 0:
        del state["checkpoint_version"]
    else:
        state["checkpoint_version"] = version
    if not keep_args:
        del state["args"]
    with zipfile.ZipFile(zip_path, "w") as z, z.open("release/mp_rank_00/model_optim_rng.pt",
                                                      "w") as f:  # fmt: skip
        torch.save(state, f)


@pytest.mark.parametrize("version, keep_args", [(3.0, True), (2.0, True), (1.0, True),
                                                (0, True), (3.0, False)])  # fmt: skip
def test_the_345m_release_layout_reads_as_their_zip_converter_reads_it(
    oracle, trained, tmp_path, capsys, version, keep_args
):
    ckpt, ids = trained
    assert cli_main(["export-megatron", str(ckpt), str(tmp_path / "mlm")]) == 0
    z = tmp_path / "run" / "megatron_gpt2_tiny.zip"
    z.parent.mkdir()
    _release_zip(tmp_path / "mlm", z, version=version, keep_args=keep_args)
    from trainer.checkpoint import load_config, resolve_checkpoint

    c = load_config(resolve_checkpoint(ckpt))
    flags = [] if keep_args else ["--num-layers", str(c.n_layer), "--hidden-size", str(c.n_embd),
                                  "--num-attention-heads", str(c.n_head),
                                  "--max-position-embeddings", str(c.block_size)]  # fmt: skip
    conf = []
    if not keep_args:  # their converter then assumes the 345M shape unless given a config file
        cfg = {"vocab_size": 50304, "n_positions": c.block_size, "n_embd": c.n_embd,
               "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": 4 * c.n_embd,
               "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}  # fmt: skip
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        conf = ["--config_file", str(tmp_path / "config.json")]
    _oracle_run(oracle, "convert_megatron_gpt2_checkpoint", str(z), *conf)
    theirs = _hf_logits(oracle, z.parent, ids, tmp_path)[..., :50257]
    capsys.readouterr()
    assert cli_main(["import-megatron", str(z), str(tmp_path / "ours"), *flags]) == 0
    assert f"checkpoint_version {version:g}" in capsys.readouterr().out
    ours = _our_logits(tmp_path / "ours", ids)
    assert np.abs(theirs - ours).max() < 1e-4
    assert np.abs(ours - _our_logits(ckpt, ids)).max() < 1e-5  # and both are the original model


# -------------------------------------------------------------------------------------- errors
def _megatron_like(tmp: Path, trained, mutate) -> Path:
    ckpt, _ = trained
    out = tmp / "mlm"
    assert cli_main(["export-megatron", str(ckpt), str(out)]) == 0
    f = out / "release" / "mp_rank_00" / "model_optim_rng.pt"
    state = torch.load(f, weights_only=False)
    mutate(state)
    torch.save(state, f)
    return out


ERRORS = [
    ("missing", None, 2, "no such file or directory"),
    ("zip without mp_rank_00", "zip", 1, "the zip holds no mp_rank_00/model_optim_rng.pt"),
    ("truncated", "truncated", 1, "not a readable torch Megatron-LM checkpoint"),
    ("BERT", lambda s: s["model"]["language_model"].__setitem__("pooler", {"dense.weight":
     torch.zeros(1)}), 1, "a BERT checkpoint"),
    ("T5", lambda s: s["model"]["language_model"].__setitem__("decoder", {"layers.0.x":
     torch.zeros(1)}), 1, "an encoder-decoder (T5) checkpoint"),
    ("SwiGLU", lambda s: setattr(s["args"], "swiglu", True), 1, "a SwiGLU MLP"),
    ("RMSNorm", lambda s: setattr(s["args"], "normalization", "RMSNorm"), 1, "RMSNorm"),
    ("MoE", lambda s: setattr(s["args"], "num_experts", 8), 1, "a mixture-of-experts model"),
    ("no args", lambda s: s.pop("args"), 2, "pass Megatron's --num-layers --hidden-size"),
    ("poisoned", lambda s: s.__setitem__("evil", _Evil()), 1, "its pickle asks for exec"),
]  # fmt: skip


class _Evil:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').close()",))


@pytest.mark.parametrize("what, how, code, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_import_errors_are_one_line_and_write_nothing(trained, tmp_path, capsys, monkeypatch,
                                                      what, how, code, message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    if how is None:
        src = tmp_path / "nothing"
    elif how == "zip":
        src = tmp_path / "other.zip"
        with zipfile.ZipFile(src, "w") as z:
            z.writestr("release/README", "no checkpoint here")
    elif how == "truncated":
        src = _megatron_like(tmp_path, trained, lambda s: None)
        f = src / "release" / "mp_rank_00" / "model_optim_rng.pt"
        f.write_bytes(f.read_bytes()[:5000])
    else:
        src = _megatron_like(tmp_path, trained, how)
    capsys.readouterr()
    assert cli_main(["import-megatron", str(src), str(tmp_path / "out")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


def test_an_imported_checkpoint_is_an_ordinary_one(trained, tmp_path):
    """export-hf and train --load (at TP=2) take what import-megatron wrote."""
    ckpt, _ = trained
    assert cli_main(["export-megatron", str(ckpt), str(tmp_path / "mlm"),
                     "--tensor-model-parallel-size", "2"]) == 0  # fmt: skip
    assert cli_main(["import-megatron", str(tmp_path / "mlm"), str(tmp_path / "ours")]) == 0
    assert cli_main(["export-hf", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 0
    prefix = write_dataset(tmp_path / "data", markov_docs(20, vocab=50257), vocab_size=50257,
                           spec="gpt2", eos_id=50256)  # fmt: skip
    assert cli_main(["train", "--data-path", prefix, "--load", str(tmp_path / "ours"),
                     "--train-iters", "2", "--seq-length", "32", "--micro-batch-size", "2",
                     "--tensor-model-parallel-size", "2", "--no-progress",
                     "--save", str(tmp_path / "tuned")]) == 0  # fmt: skip


def test_export_refuses_an_mt5_and_keeps_no_partial_output(tmp_path, capsys):
    from trainer.checkpoint import save_checkpoint
    from trainer.models import build_model
    from trainer.models.mt5 import MT5Config

    model = build_model(MT5Config(vocab_size=200, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                  num_decoder_layers=1, num_heads=2))  # fmt: skip
    save_checkpoint(tmp_path / "mt5", model, None, step=0, extra={"step": 0})
    assert cli_main(["export-megatron", str(tmp_path / "mt5"), str(tmp_path / "out")]) == 1
    assert "holds a MT5; export-megatron writes the GPT-2 architecture" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    shutil.rmtree(tmp_path / "mt5")
