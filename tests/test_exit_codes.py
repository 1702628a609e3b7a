"""The exit-code rule (README "Exit codes"), table-driven over the commands, in-process.

2 (usage): the command line is wrong: a flag or value, or a path that names nothing (an input, a
dataset prefix, a tokenizer, a checkpoint), or an output that exists without --overwrite.
1 (bad data): files that exist are malformed, incomplete or do not fit together.
Either way stderr holds one error line and no traceback.
"""

from __future__ import annotations

import importlib.util
import json
import socket

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.fileio import write_json_atomic
from dataprep.indexed import IndexedDatasetWriter
from dataprep.manifest import manifest_path


def _dataset(prefix, ids_per_doc, *, dtype=np.uint16, tokenizer="gpt2"):
    with IndexedDatasetWriter(prefix, dtype=dtype) as w:
        for ids in ids_per_doc:
            w.add_document(np.asarray(ids))
    if tokenizer:
        write_json_atomic(manifest_path(prefix), {"tokenizer": {"spec": tokenizer}})
    return str(prefix)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("exit_codes")
    rng = np.random.default_rng(0)
    f = {"dir": str(d), "missing": str(d / "nothing_here")}
    f["gpt"] = _dataset(d / "gpt", [rng.integers(0, 50000, 300) for _ in range(20)])
    f["mt5"] = _dataset(d / "mt5", [rng.integers(3, 7000, 300)], tokenizer="mt5-toy")
    f["mt5_wrong_ids"] = _dataset(d / "mt5_wrong_ids", [[40000] * 600], tokenizer="mt5-toy")
    f["int32"] = _dataset(d / "int32", [[1, 2, 3]], dtype=np.int32)
    f["bare"] = _dataset(d / "bare", [[1, 2, 3]], tokenizer=None)
    f["half"] = _dataset(d / "half", [[1, 2, 3]])
    (d / "half.bin").unlink()
    f["truncated"] = _dataset(d / "truncated", [[1, 2, 3]] * 10)
    idx = d / "truncated.idx"
    idx.write_bytes(idx.read_bytes()[:40])
    (d / "empty_dir").mkdir()
    f["empty_dir"] = str(d / "empty_dir")
    good = d / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(50)))
    f["good_jsonl"] = str(good)
    bad = d / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    f["bad_jsonl"] = str(bad)
    busy = socket.socket()  # a port something else already listens on
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    f["busy_port"] = str(busy.getsockname()[1])
    yield f
    busy.close()


# (command line with {placeholders} from `files`, exit code, text the error line must hold)
CASES = [
    # build-index
    ("build-index --output-prefix {dir}/b", 2, "the following arguments are required: --input"),
    ("build-index --input {missing} --output-prefix {dir}/b", 2, "does not exist"),
    ("build-index --input {dir}/*.nothing --output-prefix {dir}/b", 2, "matches no file"),
    ("build-index --input {empty_dir} --output-prefix {dir}/b", 2, "has no input files"),
    ("build-index --input {good_jsonl} --output-prefix {dir}/b --workers 0", 2, "--workers"),
    ("build-index --input {good_jsonl} --output-prefix {dir}/b --tokenizer nosuch", 2, "nosuch"),
    ("build-index --input {bad_jsonl} --output-prefix {dir}/b --workers 1", 1, "bad.jsonl:2:"),
    # inspect
    ("inspect", 2, "the following arguments are required: PREFIX"),
    ("inspect {missing}", 2, "no dataset has that prefix"),
    ("inspect {gpt}.bin", 2, "without the suffix: "),
    ("inspect {gpt} --doc 999", 2, "--doc 999"),
    ("inspect {bare} --doc 0", 2, "pass --tokenizer"),
    ("inspect {half}", 1, "the pair is incomplete"),
    ("inspect {truncated}", 1, "truncated"),
    # merge
    ("merge --input {missing} --output-prefix {dir}/m", 2, "no dataset has that prefix"),
    ("merge --input {empty_dir} --output-prefix {dir}/m", 2, "holds no .bin/.idx datasets"),
    ("merge --input {gpt} --output-prefix {mt5}", 2, "pass --overwrite"),
    ("merge --input {gpt} --output-prefix {missing}/sub/m", 2, "does not exist"),
    ("merge --input {gpt} {int32} --output-prefix {dir}/m", 1, "share a token dtype"),
    ("merge --input {gpt} {truncated} --output-prefix {dir}/m", 1, "truncated"),
    # preview-samples
    ("preview-samples {missing}", 2, "no dataset has that prefix"),
    ("preview-samples --data-path 1 {gpt} 1 {missing}", 2, "no dataset has that prefix"),
    ("preview-samples {bare}", 2, "pass --tokenizer"),
    ("preview-samples {gpt} --seq-length 0", 2, "--seq-length 0"),
    ("preview-samples {gpt} --bogus", 2, "unrecognized arguments: --bogus"),
    ("preview-samples {gpt} --split 1 --seq-length 100000", 1, "seq_length+1 = 100001"),
    ("preview-samples {truncated} --tokenizer gpt2", 1, "truncated"),
    # preview-masking
    ("preview-masking {missing}", 2, "no dataset has that prefix"),
    ("preview-masking {bare}", 2, "pass --tokenizer"),
    ("preview-masking {mt5} --seq-length 0", 2, "--seq-length 0 must be >= 3"),
    ("preview-masking --input {missing} --tokenizer mt5-toy", 2, "does not exist"),
    ("preview-masking {gpt} --tokenizer gpt2", 2, "no sentinel pieces"),
    ("preview-masking {mt5_wrong_ids} --seq-length 64", 1, "out of range for tokenizer"),
    ("preview-masking {mt5}", 1, "fewer than the 568 raw tokens"),
    ("preview-masking --input {bad_jsonl} --tokenizer mt5-toy", 1, "bad.jsonl:2:"),
    # train-tokenizer
    ("train-tokenizer --input {good_jsonl} --output {dir}/t", 2, "required: --vocab-size"),
    ("train-tokenizer --input {missing} --output {dir}/t --vocab-size 500", 2, "does not exist"),
    ("train-tokenizer --input {good_jsonl} --output {dir}/t --vocab-size 0", 2, "--vocab-size 0"),
    ("train-tokenizer --input {bad_jsonl} --output {dir}/t --vocab-size 500", 1, "bad.jsonl:2:"),
    # train: only what fails before ranks start
    ("train --data-path {gpt} --model nosuch", 2, "--model 'nosuch'"),
    ("train --data-path {gpt} --bogus", 2, "unrecognized arguments: --bogus"),
    ("train --data-path {missing}", 2, "--data-path"),
    ("train --data-path {gpt} --load {missing}", 2, "--load"),
    ("train --data-path {truncated} --model gpt-tiny --train-iters 1", 1, "truncated"),
    # report
    ("report {missing}", 2, "no dataset has that prefix"),
    ("report {gpt} --output {missing}/r.png", 2, "does not exist"),
    ("report {gpt} --seq-length 2", 2, "--seq-length 2"),
    ("report {truncated}", 1, "truncated"),
    ("report {half}", 1, "the pair is incomplete"),
    # export-hf / import-hf: exit 1 for a missing or foreign folder (bad data, not bad flags)
    ("export-hf {missing} {dir}/o", 1, "no such directory"),
    ("export-hf {dir} {dir}/o", 1, "no metadata.json"),
    ("export-hf", 2, "the following arguments are required: CKPT, OUT"),
    ("import-hf {missing} {dir}/o", 1, "no such directory"),
    ("import-hf {dir} {dir}/o", 1, "no config.json"),
    ("import-megatron {missing} {dir}/o", 2, "no such file or directory"),
    ("import-megatron {empty_dir} {dir}/o", 1, "no Megatron-LM checkpoint here"),
    ("import-megatron {good_jsonl} {dir}/o", 1, "not a readable torch Megatron-LM checkpoint"),
    ("export-megatron {missing} {dir}/o", 2, "no such directory"),
    ("export-megatron {dir} {dir}/o", 1, "no metadata.json"),
    ("import-nemo {missing} {dir}/o", 2, "no such file"),
    ("import-nemo {good_jsonl} {dir}/o", 1, "not a .nemo archive"),
    ("export-nemo {missing} {dir}/o.nemo", 2, "no such directory"),
    ("export-nemo {dir} {dir}/o.nemo", 1, "no metadata.json"),
    # generate / fill-mask / serve / eval: a checkpoint path that names nothing is a usage error
    ("generate {missing} --prompt hi", 2, "no such directory"),
    ("generate {dir} --prompt hi", 1, "no metadata.json"),
    ("generate {missing}", 2, "no such directory"),
    ("fill-mask {missing} --prompt a<mask>", 2, "no such directory"),
    ("fill-mask {dir} --prompt a<mask>", 1, "no metadata.json"),
    ("serve {missing}", 2, "no such directory"),
    ("serve {dir} --port 70000", 2, "--port must be in [0, 65535]"),
    ("serve {dir} --port {busy_port}", 2, "--port {busy_port}: address 127.0.0.1:{busy_port} is"),
    ("eval {missing} --lambada {good_jsonl}", 2, "no such directory"),
    ("eval {dir} --lambada {good_jsonl}", 1, "no metadata.json"),
    ("eval {dir}", 2, "nothing to evaluate"),
    # smoke
    ("smoke --tensor-model-parallel-size 0 --output {dir}/smoke", 2, "--tensor-model-parallel"),
    ("smoke --workers 0 --output {dir}/smoke", 2, "--workers must be >= 1, got 0"),
    ("smoke --bogus", 2, "unrecognized arguments: --bogus"),
]


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capsys.readouterr()


def _line(case) -> str:
    return case.values[0] if hasattr(case, "marks") else case[0]


@pytest.mark.parametrize("line, code, message", CASES, ids=[_line(c) for c in CASES])
def test_exit_code_and_one_error_line(files, capsys, line, code, message):
    argv = [word.format(**files) for word in line.split()]
    got, captured = _run(argv, capsys)
    err = captured.err
    assert "Traceback" not in err
    errors = [x for x in err.splitlines() if "error:" in x]
    assert len(errors) == 1, err
    assert errors[0].startswith((f"dataprep {argv[0]}: error: ", "dataprep: error: "))
    assert message.format(**files) in errors[0]
    assert got == code, err
    if not err.startswith("usage: "):  # argparse shows the usage above; ours are one line
        assert err.count("\n") == 1, err


def test_every_command_is_in_the_table():
    from dataprep.cli import COMMANDS

    covered = {_line(c).split()[0] for c in CASES}
    assert covered >= set(COMMANDS)


def test_a_missing_optional_package_names_its_extra():
    from dataprep.errors import UsageError, require_extra

    require_extra("numpy", "anything", "test")  # installed: nothing to say
    with pytest.raises(UsageError) as e:
        require_extra("no_such_package_xyz", "--dedup minhash", "dedup")
    assert str(e.value) == (
        "--dedup minhash needs the no_such_package_xyz package: pip install 'dataprep[dedup]'"
    )
    assert e.value.exit_code == 2


def test_serve_without_its_extra_is_one_line_naming_it(files, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "uvicorn" else find_spec(name, *a),
    )
    code, captured = _run(["serve", files["dir"]], capsys)
    assert code == 2
    assert captured.err == (
        "dataprep serve: error: dataprep serve needs the uvicorn package: "
        "pip install 'dataprep[serve]'\n"
    )
    assert captured.out == ""
