"""`dataprep serve` over real HTTP on 127.0.0.1 (issue 10 §2): the Megatron-GPT card's client
request, the OpenAI completions shape, and every bad request of the issue answered 400/413 with a
JSON error naming the field and its range, the server answering normally afterwards."""

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
def server(tmp_path_factory):
    from trainer.generate import load_for_inference
    from trainer.launch import find_free_port
    from trainer.serve import Server, create_app

    d = tmp_path_factory.mktemp("serve")
    inputs = [str(p) for p in sorted((TOY / "pile").glob("*.jsonl.zst"))]
    assert cli_main(["build-index", "--input", *inputs, "--output-prefix", str(d / "pile"),
                     "--tokenizer", "gpt2", "--append-eod", "--no-progress"]) == 0  # fmt: skip
    cfg = TrainConfig(data_path=(str(d / "pile_text_document"),), model="gpt-tiny", seq_length=32,
                      train_iters=2, micro_batch_size=2, num_threads=1, progress=False,
                      save=str(d / "ckpt"))  # fmt: skip
    assert run(cfg) == 0
    model, tok, path = load_for_inference(d / "ckpt")
    app = create_app(Server(model, tok, name="tiny", max_tokens=100, max_body_bytes=10_000))
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
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def _healthy(url: str) -> None:
    r = requests.get(f"{url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_the_cards_client_request_gets_nemos_response(server, caplog):
    headers = {"Content-Type": "application/json"}
    with caplog.at_level(logging.INFO, logger="trainer.serve"):
        resp = requests.put(f"{server}/generate", data=json.dumps(CARD_REQUEST), headers=headers)
    assert resp.status_code == 200
    out = resp.json()
    assert set(out) == {"sentences", "tokens", "token_ids", "logprob", "offsets"}
    sentence = out["sentences"][0]
    assert sentence.startswith("<|endoftext|>" + CARD_REQUEST["sentences"][0])  # add_BOS
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
    assert all(r == first for r in results)  # one at a time on the model: same seed, same answer


def test_openai_completions(server):
    body = {"prompt": "Hello", "max_tokens": 6, "temperature": 0, "logprobs": True}
    out = requests.post(f"{server}/v1/completions", json=body).json()
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    choice = out["choices"][0]
    greedy = requests.put(f"{server}/generate", json={"sentences": ["Hello"], "greedy": True,
                          "tokens_to_generate": 6}).json()  # fmt: skip
    assert "Hello" + choice["text"] == greedy["sentences"][0]
    assert len(choice["logprobs"]) == len(choice["tokens"]) == out["usage"]["completion_tokens"]
    assert choice["finish_reason"] in ("stop", "length") and all(x <= 0 for x in choice["logprobs"])
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + len(choice["tokens"])


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
    "body, message",
    [
        ({"max_tokens": 3}, "prompt is required"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens must be an integer in [1, 100]"),
        ({"prompt": "a", "temperature": -1}, "temperature must be in [0, 100]"),
        ({"prompt": "a", "top_p": 2}, "top_p must be in [0, 1]"),
        ({"prompt": "a", "seed": "x"}, "seed must be an integer >= 0"),
        ({"prompt": "a", "n": 2}, "n must be 1"),
        ({"prompt": "a", "best_of": 2}, "unknown field 'best_of'"),
    ],
)
def test_bad_completions_requests(server, body, message):
    resp = requests.post(f"{server}/v1/completions", json=body)
    assert resp.status_code == 400 and message in resp.json()["error"]


def test_serve_cli_errors(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli_main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in [0, 65535]" in capsys.readouterr().err
