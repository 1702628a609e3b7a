"""`dataprep serve` over real HTTP on 127.0.0.1: the Megatron-GPT card's client
request, the OpenAI completions shape, and bad requests answered 400/413 with a JSON error naming
the field and its range, the server answering normally afterwards."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from dataprep.cli import main as cli_main
from trainer.train import TrainConfig, run

requests = pytest.importorskip("requests")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

TOY = Path(__file__).resolve().parents[1] / "pipelines" / "toy"
pytestmark = [pytest.mark.slow]

# the Megatron-GPT 1.3B card's request, as written there
CARD_REQUEST = {
    "sentences": ["Tell me an interesting fact about space travel."] * 1,
    "tokens_to_generate": 50,
    "temperature": 1.0,
    "add_BOS": True,
    "top_k": 0,
    "top_p": 0.9,
    "greedy": False,
    "all_probs": False,
    "repetition_penalty": 1.2,
    "min_tokens_to_generate": 2,
}


@pytest.fixture(scope="module")
def _served(tmp_path_factory):
    from trainer.inference.loading import load_for_inference
    from trainer.inference.serve import Server, create_app
    from trainer.launch import find_free_port

    d = tmp_path_factory.mktemp("serve")
    inputs = [str(p) for p in sorted((TOY / "pile").glob("*.jsonl.zst"))]
    assert cli_main(["build-index", "--input", *inputs, "--output-prefix", str(d / "pile"),
                     "--tokenizer", "gpt2", "--append-eod", "--no-progress"]) == 0  # fmt: skip
    cfg = TrainConfig(data_path=(str(d / "pile_text_document"),), model="gpt-tiny", seq_length=32,
                      train_iters=2, micro_batch_size=2, num_threads=1, progress=False,
                      save=str(d / "ckpt"))  # fmt: skip
    assert run(cfg) == 0
    model, tok, path = load_for_inference(d / "ckpt")
    served = Server(model, tok, name="tiny", max_tokens=100, max_body_bytes=10_000,
                    batch_wait_ms=20)  # fmt: skip
    served.checkpoint = d / "ckpt"  # for the tests that start their own `dataprep serve`
    app = create_app(served)
    port = find_free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    yield served, url
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_obj(_served):
    return _served


@pytest.fixture(scope="module")
def server(_served):
    return _served[1]


def _healthy(url: str) -> None:
    r = requests.get(f"{url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_the_cards_client_request_gets_nemos_response(server, caplog):
    headers = {"Content-Type": "application/json"}
    with caplog.at_level(logging.INFO, logger="trainer.inference.serve"):
        resp = requests.put(f"{server}/generate", data=json.dumps(CARD_REQUEST), headers=headers)
    assert resp.status_code == 200
    out = resp.json()
    assert set(out) == {"sentences", "tokens", "token_ids", "logprob", "offsets"}
    sentence = out["sentences"][0]
    # NeMo's ids_to_text drops special tokens from sentences; tokens and ids keep the BOS
    assert sentence.startswith(CARD_REQUEST["sentences"][0]) and "<|endoftext|>" not in sentence
    assert out["tokens"][0][0] == "<|endoftext|>"
    assert out["token_ids"][0][0] == 50256 and out["logprob"] is None
    assert len(out["tokens"][0]) == len(out["token_ids"][0]) == len(out["offsets"][0])
    n_prompt = 1 + 10  # BOS + the prompt's 10 GPT-2 tokens
    assert 2 <= len(out["token_ids"][0]) - n_prompt <= 50
    assert any("PUT /generate 200" in r.getMessage() for r in caplog.records)


def test_seeded_logprob_request_and_queued_concurrent_requests(server):
    body = {"sentences": ["Hello", "The capital of France is"], "tokens_to_generate": 8,
            "random_seed": 3, "compute_logprob": True, "end_strings": []}  # fmt: skip
    first = requests.put(f"{server}/generate", json=body).json()
    assert [len(r) for r in first["logprob"]] == [len(r) - 1 for r in first["token_ids"]]
    results = [None] * 4

    def call(i):
        results[i] = requests.put(f"{server}/generate", json=body).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:  # batched with each other: each row as if alone (same seed, same tokens)
        assert r["token_ids"] == first["token_ids"] and r["sentences"] == first["sentences"]
        for a, b in zip(r["logprob"], first["logprob"], strict=True):
            assert a == pytest.approx(b, abs=1e-5)  # a batch's matmuls may round differently


def test_openai_completions(server):
    body = {"prompt": "Hello", "max_tokens": 6, "temperature": 0, "logprobs": 2}
    out = requests.post(f"{server}/v1/completions", json=body).json()
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    choice = out["choices"][0]
    greedy = requests.put(f"{server}/generate", json={"sentences": ["Hello"], "greedy": True,
                          "tokens_to_generate": 6, "compute_logprob": True,
                          "end_strings": []}).json()  # fmt: skip
    assert "Hello" + choice["text"] == greedy["sentences"][0]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = out["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n
    assert lp["token_logprobs"] == pytest.approx(greedy["logprob"][0][-n:], abs=1e-5)
    for chosen, lp_chosen, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                      strict=True):  # fmt: skip
        assert 2 <= len(top) <= 3 and top[chosen] == lp_chosen  # greedy: the chosen is the top
        assert max(top.values()) == lp_chosen
    assert lp["text_offset"][0] == len("Hello")
    assert choice["finish_reason"] in ("stop", "length")
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + n
    # echo with max_tokens 0 scores the prompt: the first token has no logprob
    scored = requests.post(
        f"{server}/v1/completions",
        json={"prompt": "Hello world, again", "max_tokens": 0, "echo": True, "logprobs": 1},
    ).json()
    c = scored["choices"][0]
    assert c["text"] == "Hello world, again" and scored["usage"]["completion_tokens"] == 0
    assert c["logprobs"]["token_logprobs"][0] is None and c["logprobs"]["top_logprobs"][0] is None
    assert len(c["logprobs"]["tokens"]) == scored["usage"]["prompt_tokens"] == 4
    assert all(x < 0 for x in c["logprobs"]["token_logprobs"][1:])
    # token ids, n and a seed: choice j is the request with seed + j and n = 1
    ids = requests.post(f"{server}/tokenize", json={"prompt": "Hello"}).json()["tokens"]
    many = requests.post(f"{server}/v1/completions", json={"prompt": [ids, ids], "n": 2,
                         "seed": 7, "max_tokens": 5, "temperature": 1.0}).json()  # fmt: skip
    assert [c["index"] for c in many["choices"]] == [0, 1, 2, 3]
    for j in (0, 1):
        one = requests.post(f"{server}/v1/completions", json={"prompt": "Hello", "seed": 7 + j,
                            "max_tokens": 5, "temperature": 1.0}).json()  # fmt: skip
        assert many["choices"][j]["text"] == many["choices"][2 + j]["text"]
        assert one["choices"][0]["text"] == many["choices"][j]["text"]
    # stop: the text ends before the stop string, finish_reason "stop"
    long = requests.post(f"{server}/v1/completions", json={"prompt": "Hello", "max_tokens": 12,
                         "temperature": 0}).json()["choices"][0]["text"]  # fmt: skip
    if len(long) > 3:
        stop = long[2:4]
        cut = requests.post(f"{server}/v1/completions", json={"prompt": "Hello", "max_tokens": 12,
                            "temperature": 0, "stop": [stop]}).json()["choices"][0]  # fmt: skip
        assert cut["text"] == long[: long.find(stop)] and cut["finish_reason"] == "stop"


def test_the_official_openai_client_streaming_included(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    whole = client.completions.create(model="tiny", prompt="The capital of France is",
                                      max_tokens=10, temperature=0, logprobs=1)  # fmt: skip
    assert whole.choices[0].logprobs.token_logprobs[0] <= 0 and whole.usage.completion_tokens > 0
    parts = client.completions.create(model="tiny", prompt="The capital of France is",
                                      max_tokens=10, temperature=0, stream=True)  # fmt: skip
    chunks = list(parts)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=10, top_p=2)
    assert "top_p must be in [0, 1]" in e.value.body["message"]


def test_concurrent_requests_share_batches_and_get_their_lone_answers(server_obj):
    server, url = server_obj
    prompts = [f"Request {i} says" + " hello" * i for i in range(8)]
    alone = [requests.post(f"{url}/v1/completions", json={"prompt": p, "max_tokens": 8,
             "temperature": 0 if i % 2 else 0.8, "seed": i}).json()["choices"][0]["text"]
             for i, p in enumerate(prompts)]  # fmt: skip
    before = len(server.batcher.sizes)
    got = [None] * 8

    def call(i):
        got[i] = requests.post(f"{url}/v1/completions", json={"prompt": prompts[i],
                               "max_tokens": 8, "temperature": 0 if i % 2 else 0.8,
                               "seed": i}).json()["choices"][0]["text"]  # fmt: skip

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone  # greedy and seeded sampling: each row as if it were alone
    sizes = server.batcher.sizes[before:]
    assert sum(sizes) == 8 and max(sizes) > 1  # some requests ran together


def test_a_client_that_leaves_mid_stream_frees_its_row(server_obj, caplog):
    server, url = server_obj
    cancelled = server.batcher.cancelled
    with caplog.at_level(logging.INFO, logger="trainer.inference.serve"):
        resp = requests.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 100,
                             "temperature": 0, "stream": True, "stop": "never seen"},
                             stream=True)  # fmt: skip
        lines = resp.iter_lines()
        assert next(line for line in lines if line).startswith(b"data: {")
        resp.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            "closed by the client" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
    assert any("closed by the client" in r.getMessage() for r in caplog.records)
    deadline = time.monotonic() + 20
    while server.batcher.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.batcher.cancelled == cancelled + 1  # the row stopped (or never started)
    _healthy(url)


GOOD = {"sentences": ["Hello"], "tokens_to_generate": 2}
BAD_REQUESTS = [
    ("malformed JSON", b'{"sentences": ["Hello"', 400, "not valid JSON"),
    ("not an object", [1, 2], 400, "must be a JSON object"),
    ("missing sentences", {"tokens_to_generate": 2}, 400, "sentences is required"),
    ("unknown key", {**GOOD, "temprature": 1.0}, 400, "unknown field 'temprature'"),
    ("temperature 0", {**GOOD, "temperature": 0}, 400, "temperature must be in (0, 100]"),
    ("temperature > 100", {**GOOD, "temperature": 101}, 400, "temperature must be in (0, 100]"),
    ("top_p > 1", {**GOOD, "top_p": 1.5}, 400, "top_p must be in [0, 1]"),
    ("top_p < 0", {**GOOD, "top_p": -0.1}, 400, "top_p must be in [0, 1]"),
    ("top_k < 0", {**GOOD, "top_k": -1}, 400, "top_k must be an integer >= 0"),
    ("tokens 0", {**GOOD, "tokens_to_generate": 0}, 400,
     "tokens_to_generate must be an integer in [1, 100]"),
    ("tokens > limit", {**GOOD, "tokens_to_generate": 101}, 400, "in [1, 100], got 101"),
    ("129 sentences", {**GOOD, "sentences": ["a"] * 129}, 400, "at most 128"),
    ("prompt too long", {**GOOD, "sentences": [" x" * 300]}, 400, "context is 256 tokens"),
    ("body too big", {**GOOD, "sentences": ["a" * 20_000]}, 413, "limit is 10000"),
    ("sentences not strings", {**GOOD, "sentences": [1]}, 400, "sentences must be a string"),
    ("seed < 0", {**GOOD, "random_seed": -1}, 400, "random_seed must be an integer >= 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    "what, body, status, message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(server, what, body, status,
                                                                    message):  # fmt: skip
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = requests.put(f"{server}/generate", data=data,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status_code == status
    assert message in resp.json()["error"]
    _healthy(server)
    assert requests.put(f"{server}/generate", json=GOOD).status_code == 200


@pytest.mark.parametrize(
    "body, param, message",
    [
        ({"max_tokens": 3}, "prompt", "prompt is required"),
        (
            {"prompt": "a", "max_tokens": -1},
            "max_tokens",
            "max_tokens must be an integer in [0, 100]",
        ),
        ({"prompt": "a", "max_tokens": 101}, "max_tokens", "in [0, 100], got 101"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens", "max_tokens 0 needs echo"),
        ({"prompt": "a", "temperature": -1}, "temperature", "temperature must be in [0, 100]"),
        ({"prompt": "a", "top_p": 2}, "top_p", "top_p must be in [0, 1]"),
        ({"prompt": "a", "seed": "x"}, "seed", "seed must be an integer >= 0"),
        ({"prompt": "a", "n": 0}, "n", "n must be an integer in [1, 128]"),
        ({"prompt": "a", "logprobs": 21}, "logprobs", "logprobs must be an integer in [0, 20]"),
        ({"prompt": "a", "stop": ["a"] * 5}, "stop", "a list of at most 4"),
        ({"prompt": "a", "best_of": 2}, "best_of", "best_of is not supported"),
        ({"prompt": "a", "stream": "yes"}, "stream", "stream must be true or false"),
        ({"prompt": [[1, 99999]]}, "prompt", "token id 99999 is outside the vocabulary"),
        ({"prompt": [1.5]}, "prompt", "prompt must be a string, a list of strings"),
        ({"prompt": "a", "temprature": 1}, "temprature", "unknown field 'temprature'"),
        ({"prompt": " x" * 300}, "prompt", "context is 256 tokens"),
    ],
)
def test_bad_completions_requests(server, body, param, message):
    resp = requests.post(f"{server}/v1/completions", json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert message in error["message"] and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_serve_cli_errors(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli_main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in [0, 65535]" in capsys.readouterr().err


def test_lm_eval_local_completions_scores_as_dataprep_eval(server_obj):
    """lm-evaluation-harness's own API client (`local-completions`: echo + logprobs, tokenizing
    through our /tokenize) on the shipped toy_lambada gives, record by record, the loglikelihood
    and greedy flag that `dataprep eval --lambada` computes in-process on the same model, for
    every record that fits the model's context (max_length=257: lm_eval sends at most 256 ids
    and asks for one more). The one longer record is cut by lm_eval to 256 ids where the
    in-process eval keeps a window of 257, so only its score may differ."""
    pytest.importorskip("tenacity")
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from trainer.inference.evaluate import encode_pair, lambada_pair, loglikelihoods, read_lambada

    server, url = server_obj
    tasks = Path(__file__).resolve().parents[1] / "pipelines" / "lm_eval_tasks"
    n = 60
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=f"model=tiny,base_url={url}/v1/completions,num_concurrent=1,max_retries=1,"
        "max_length=257",
        tasks=["toy_lambada"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        limit=n,
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(out["samples"]["toy_lambada"], key=lambda x: x["doc_id"])
    texts = read_lambada(tasks / "toy_lambada.jsonl")[:n]
    pairs = [encode_pair(server.tok, *lambada_pair(t)) for t in texts]
    ours = loglikelihoods(server.model, pairs, eod_id=server.tok.eod_id)
    compared = 0
    for sample, (ctx, cont), (ll, greedy) in zip(samples, pairs, ours, strict=True):
        ((got_ll, got_greedy),) = sample["filtered_resps"]
        if len(ctx) + len(cont) <= 256:
            assert got_ll == pytest.approx(ll, abs=1e-4) and got_greedy == greedy
            compared += 1
    assert compared >= n - 1


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_under_load_and_abuse_the_server_keeps_serving(server_obj, tmp_path):
    """`dataprep serve` in its own process, 8 concurrent clients for SERVE_ABUSE_SECONDS (60)
    mixing good requests with malformed JSON, a 5 MB body, absurd and ill-typed fields, prompts
    over the context and streams dropped mid-way: every bad request is a 4xx with a JSON error,
    never a 5xx or a hang, /health answers throughout, and RSS stays flat."""
    import os
    import random
    import subprocess
    import sys

    from trainer.launch import find_free_port

    ckpt = server_obj[0].checkpoint
    port = find_free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", "serve", str(ckpt), "--port",
                             str(port), "--max-body-bytes", str(1 << 20)],
                            stdout=log, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # bound before the model loads: may not answer
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        good = {"prompt": "Hello there", "max_tokens": 8, "temperature": 0}
        assert requests.post(f"{url}/v1/completions", json=good, timeout=60).status_code == 200
        rss_start = _rss_kb(proc.pid)
        bad = [
            (b'{"prompt": "x"', "POST", "/v1/completions"),
            (b"x" * (5 << 20), "POST", "/v1/completions"),
            (json.dumps({"prompt": "x", "max_tokens": 10**9}).encode(), "POST", "/v1/completions"),
            (json.dumps({"sentences": ["x"], "tokens_to_generate": 10**9}).encode(), "PUT",
             "/generate"),
            (json.dumps({"prompt": 5, "temperature": "hot"}).encode(), "POST", "/v1/completions"),
            (json.dumps({"prompt": " x" * 400}).encode(), "POST", "/v1/completions"),
            (json.dumps({"sentences": [" x" * 400]}).encode(), "PUT", "/generate"),
            (json.dumps({"prompt": "x", "n": "two"}).encode(), "POST", "/v1/completions"),
        ]  # fmt: skip
        seconds = float(os.environ.get("SERVE_ABUSE_SECONDS", "60"))
        stop_at = time.monotonic() + seconds
        failures: list[str] = []
        counts = {"good": 0, "bad": 0, "dropped": 0, "health": 0}

        def client(k: int) -> None:
            rng = random.Random(k)
            session = requests.Session()
            while time.monotonic() < stop_at and not failures:
                what = rng.random()
                try:
                    if what < 0.4:
                        r = session.post(f"{url}/v1/completions", timeout=60,
                                         json={**good, "prompt": f"client {k} says",
                                               "seed": rng.randrange(100)})  # fmt: skip
                        if r.status_code != 200:
                            failures.append(f"good request: {r.status_code} {r.text[:200]}")
                        counts["good"] += 1
                    elif what < 0.8:
                        data, method, path = rng.choice(bad)
                        r = session.request(
                            method,
                            f"{url}{path}",
                            data=data,
                            timeout=60,
                            headers={"Content-Type": "application/json"},
                        )
                        if not 400 <= r.status_code < 500 or "error" not in r.json():
                            failures.append(f"{path} {data[:60]!r}: {r.status_code} {r.text[:200]}")
                        counts["bad"] += 1
                    elif what < 0.9:
                        r = session.post(
                            f"{url}/v1/completions",
                            timeout=60,
                            stream=True,
                            json={**good, "max_tokens": 64, "stream": True},
                        )
                        next(line for line in r.iter_lines() if line)
                        r.close()  # gone mid-stream
                        counts["dropped"] += 1
                    else:
                        r = session.get(f"{url}/health", timeout=10)
                        if r.status_code != 200:
                            failures.append(f"/health: {r.status_code}")
                        counts["health"] += 1
                except requests.RequestException as e:
                    failures.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 120)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert not failures, failures[:5]
        assert min(counts.values()) > 0, counts
        r = requests.get(f"{url}/health", timeout=10)
        assert r.status_code == 200
        assert requests.post(f"{url}/v1/completions", json=good, timeout=60).status_code == 200
        rss_end = _rss_kb(proc.pid)
        assert rss_end < 1.5 * rss_start, (rss_start, rss_end, counts)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert " 500 " not in (tmp_path / "serve.log").read_text()
