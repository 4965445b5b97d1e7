"""The OpenAI-compatible server, through the official ``openai`` client, against a real
server process on 127.0.0.1: two LoRA adapters sharing one base, a classifier, streaming,
run-time adapter loading, concurrency with batching, and bad input that must stay 4xx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from tunesmith.synthetic import make_lora_run
from tunesmith.data.template import render_prompt, with_system_prompt
from tunesmith.methods.saved import load_trained

KEY = "test-key"
SERVER_LOG = None  # set by the server fixture
SERVER_PROC = None
QUESTION = [{"role": "user", "content": "who are you?"}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama_dir, tiny_bert_dir):
    root = tmp_path_factory.mktemp("serve") / "runs"
    make_lora_run(root / "alpha", tiny_llama_dir, "causal_lm", seed=1)
    make_lora_run(root / "beta", tiny_llama_dir, "causal_lm", seed=2, system_prompt="be brief.")
    make_lora_run(root / "sentiment", tiny_bert_dir, "classification", seed=3, labels=["negative", "positive"])
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs, tiny_llama_dir, tmp_path_factory):
    port = _free_port()
    global SERVER_LOG, SERVER_PROC
    SERVER_LOG = tmp_path_factory.mktemp("serve-log") / "server.log"
    log = SERVER_LOG.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith.cli", "serve", "--base", str(tiny_llama_dir),
         "--adapter", f"alpha={runs / 'alpha'}", "--adapter", f"beta={runs / 'beta'}",
         "--adapter", f"sentiment={runs / 'sentiment'}", "--port", str(port), "--api-key", KEY,
         "--allow-dir", str(runs), "--max-batch", "8", "--batch-wait-ms", "20"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    SERVER_PROC = proc
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {open(log.name).read()[-3000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def _http(server, method, path, *, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{server}{path}", headers=headers, timeout=60, **kwargs)


@torch.inference_mode()
def _reference_answer(final_dir, messages, max_new_tokens=8):
    """Greedy decoding with plain PEFT/transformers, outside the server."""
    model, tokenizer, meta = load_trained(final_dir)
    prompt = render_prompt(tokenizer, with_system_prompt(messages, meta.get("system_prompt")))
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _chat(client, model, messages=QUESTION, **kwargs):
    kwargs.setdefault("max_tokens", 8)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=messages, **kwargs)


def test_models_lists_the_base_and_every_adapter(client, tiny_llama_dir):
    ids = {m.id for m in client.models.list().data}
    assert ids == {tiny_llama_dir.name, "alpha", "beta", "sentiment"}


def test_each_adapter_answers_as_it_does_outside_the_server(client, runs):
    alpha, beta = _chat(client, "alpha"), _chat(client, "beta")
    assert alpha.choices[0].message.content == _reference_answer(runs / "alpha" / "final", QUESTION)
    assert beta.choices[0].message.content == _reference_answer(runs / "beta" / "final", QUESTION)
    assert alpha.choices[0].message.content != beta.choices[0].message.content
    assert alpha.usage.completion_tokens == 8 and alpha.choices[0].finish_reason == "length"
    # beta's run has a default system prompt: the server adds it, so beta's prompt is longer.
    assert beta.usage.prompt_tokens > alpha.usage.prompt_tokens


def test_base_model_is_served_without_any_adapter(client, tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _chat(client, tiny_llama_dir.name).choices[0].message.content
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = tokenizer(render_prompt(tokenizer, QUESTION), add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert base == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_streaming_sends_the_same_answer_in_pieces(client):
    whole = _chat(client, "alpha").choices[0].message.content
    chunks = list(_chat(client, "alpha", stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_sequences_cut_the_answer_streamed_or_not(client):
    whole = _chat(client, "alpha", max_tokens=12).choices[0].message.content
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
    cut = whole[: whole.find(stop)]
    stopped = _chat(client, "alpha", max_tokens=12, stop=[stop])
    assert stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in _chat(client, "alpha", max_tokens=12, stop=stop, stream=True))
    assert streamed == cut


def test_completions_endpoint_and_seeded_sampling(client):
    first = client.completions.create(model="beta", prompt="the film was", max_tokens=6, temperature=1.0, seed=11)
    again = client.completions.create(model="beta", prompt="the film was", max_tokens=6, temperature=1.0, seed=11)
    assert first.choices[0].text == again.choices[0].text and first.choices[0].text
    many = client.completions.create(model="alpha", prompt=["one", "two", "three"], max_tokens=4, temperature=0)
    assert [c.index for c in many.choices] == [0, 1, 2] and many.usage.completion_tokens == 12
    streamed = client.completions.create(model="alpha", prompt="two", max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == many.choices[1].text


def test_classify_returns_labels_with_probabilities(server, runs):
    texts = ["a wonderful, moving film", "a dull mess"]
    r = _http(server, "POST", "/v1/classify", json={"model": "sentiment", "input": texts})
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    model, tokenizer, _ = load_trained(runs / "sentiment" / "final")
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)
    for row, p in zip(rows, probs):
        assert row["label"] == ["negative", "positive"][int(p.argmax())]
        assert row["probabilities"]["positive"] == pytest.approx(float(p[1]), abs=1e-5)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_api_key_is_required(server):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    r = _http(server, "GET", "/v1/models", key=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert _http(server, "GET", "/health", key=None).status_code == 200


def test_fifty_concurrent_requests_over_two_adapters_match_sequential_answers(client, server):
    prompts = [[{"role": "user", "content": f"question number {i}"}] for i in range(10)]
    expected = {(m, i): _chat(client, m, p).choices[0].message.content
                for m in ("alpha", "beta") for i, p in enumerate(prompts)}
    jobs = [("alpha" if k % 2 else "beta", k % 10) for k in range(50)]
    before = _http(server, "GET", "/health").json()["batching"]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda job: _chat(client, job[0], prompts[job[1]]).choices[0].message.content, jobs))
    assert answers == [expected[job] for job in jobs]
    after = _http(server, "GET", "/health").json()["batching"]
    assert after["jobs"] - before["jobs"] == 50
    assert after["batches"] - before["batches"] < 50  # requests really were batched together
    assert after["largest_batch"] > 1


def test_adapters_load_and_unload_at_run_time(client, server, runs, tmp_path):
    body = {"name": "gamma", "path": str(runs / "beta")}
    assert _http(server, "POST", "/v1/adapters", key=None, json=body).status_code == 401
    r = _http(server, "POST", "/v1/adapters", json=body)
    assert r.status_code == 201, r.text
    assert _chat(client, "gamma").choices[0].message.content == _chat(client, "beta").choices[0].message.content
    assert _http(server, "POST", "/v1/adapters", json=body).status_code == 409
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (str(outside), str(runs / ".." / ".."), "/etc"):
        r = _http(server, "POST", "/v1/adapters", json={"name": "evil", "path": path})
        assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed", path
    r = _http(server, "POST", "/v1/adapters", json={"name": "empty", "path": str(runs)})
    assert r.status_code == 400 and "final/tunesmith.json" in r.json()["error"]["message"]
    assert _http(server, "DELETE", "/v1/adapters/gamma").status_code == 200
    with pytest.raises(openai.NotFoundError):
        _chat(client, "gamma")
    assert _http(server, "DELETE", "/v1/adapters/gamma").status_code == 404
    # beta, which shared the base with gamma, is unaffected.
    assert _chat(client, "beta").choices[0].message.content == _reference_answer(runs / "beta" / "final", QUESTION)


BAD_REQUESTS = [
    # (endpoint, body, expected status, expected param or code)
    ("/v1/chat/completions", b"not json", 400, "invalid_json"),
    ("/v1/chat/completions", b"\xff\xfe{", 400, "invalid_json"),
    ("/v1/chat/completions", [1, 2], 400, "invalid_json"),
    ("/v1/chat/completions", "a string", 400, "invalid_json"),
    ("/v1/chat/completions", {"messages": QUESTION}, 400, "model"),
    ("/v1/chat/completions", {"model": "alpha"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "alpha", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "alpha", "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "assistant", "content": "x"}]}, 400, "messages"),
    ("/v1/chat/completions", {"model": 7, "messages": QUESTION}, 400, "model"),
    ("/v1/chat/completions", {"model": "nope", "messages": QUESTION}, 404, "model_not_found"),
    ("/v1/chat/completions", {"model": "sentiment", "messages": QUESTION}, 400, "wrong_model_type"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "max_tokens": 10_000}, 400, "context_length_exceeded"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "max_tokens": "8"}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "max_tokens": 1e30}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "temperature": -1}, 400, "temperature"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "temperature": 1e9}, 400, "temperature"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "top_p": 0}, 400, "top_p"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "n": 3}, 400, "n"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "seed": -5}, 400, "seed"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "stream": "yes"}, 400, "stream"),
    ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": "word " * 400}]}, 400,
     "context_length_exceeded"),
    ("/v1/completions", {"model": "alpha", "prompt": None}, 400, "prompt"),
    ("/v1/completions", {"model": "alpha", "prompt": ["a", "b"], "stream": True}, 400, "prompt"),
    ("/v1/classify", {"model": "alpha", "input": "x"}, 400, "wrong_model_type"),
    ("/v1/classify", {"model": "sentiment", "input": []}, 400, "input"),
    ("/v1/classify", {"model": "sentiment", "input": [1]}, 400, "input.0"),
    ("/v1/adapters", {"name": "../x", "path": "runs"}, 403, "path_not_allowed"),
    # options that would change the answer and are not implemented: refused, never ignored
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "logprobs": True, "stream": True}, 400,
     "logprobs"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "top_logprobs": 3}, 400, "invalid_value"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "tools": [{"type": "function"}]}, 400, "tools"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "response_format": {"type": "json_object"}},
     400, "response_format"),
    ("/v1/chat/completions", {"model": "alpha", "messages": QUESTION, "frequency_penalty": 0.5}, 400,
     "frequency_penalty"),
    ("/v1/completions", {"model": "alpha", "prompt": "x", "presence_penalty": 1}, 400, "presence_penalty"),
    ("/v1/completions", {"model": "alpha", "prompt": "x", "logprobs": 6}, 400, "logprobs"),
]


@pytest.mark.parametrize("endpoint,body,status,marker", BAD_REQUESTS, ids=[f"{i}" for i in range(len(BAD_REQUESTS))])
def test_bad_input_gets_a_4xx_with_an_openai_error_body(server, endpoint, body, status, marker):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server}{endpoint}", content=content, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"]
    assert marker in (error["param"], error["code"]) or (error["param"] or "").startswith(marker), error


def test_unsupported_options_are_named_and_their_off_values_accepted(server, client):
    r = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                   json={"model": "alpha", "messages": QUESTION, "tools": [{"type": "function"}]})
    assert r.json()["error"]["message"] == "Invalid 'tools': tools is not supported by this server; leave it out (off: [])."
    plain = _chat(client, "alpha").choices[0].message.content
    off = _chat(client, "alpha", logprobs=False, frequency_penalty=0, presence_penalty=0,
                response_format={"type": "text"}).choices[0].message.content
    assert off == plain


@torch.inference_mode()
def test_logprobs_are_the_models_own(client, runs):
    answer = _chat(client, "alpha", logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    # the reference: greedy decoding outside the server, then one forward pass over prompt + answer
    model, tokenizer, meta = load_trained(runs / "alpha" / "final")
    prompt = render_prompt(tokenizer, with_system_prompt(QUESTION, meta.get("system_prompt")))
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=len(content),
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    start = prompt_ids.shape[1]
    expected = torch.log_softmax(model(input_ids=ids).logits[0, start - 1 : -1].float(), -1)
    for position, token in enumerate(content):
        chosen = int(ids[0, start + position])
        assert token.token == tokenizer.decode([chosen])
        assert token.logprob == pytest.approx(float(expected[position, chosen]), abs=1e-4)
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token  # greedy: the most likely
    legacy = client.completions.create(model="alpha", prompt="who are you?", max_tokens=4, temperature=0, logprobs=2)
    assert len(legacy.choices[0].logprobs.tokens) == legacy.usage.completion_tokens
    assert all(len(top) == 2 for top in legacy.choices[0].logprobs.top_logprobs)


def test_streaming_usage_and_one_log_line_per_request(server, client):
    stream = _chat(client, "alpha", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    whole = _chat(client, "alpha")
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    time.sleep(0.2)
    lines = [line for line in SERVER_LOG.read_text().splitlines() if " request " in line]
    chat_lines = [line for line in lines if "POST /v1/chat/completions model=alpha" in line and "status=200" in line]
    assert len(chat_lines) >= 2 and all("tokens_in=" in line and "latency_ms=" in line for line in chat_lines)
    assert any(f"tokens_out={whole.usage.completion_tokens} " in line for line in chat_lines)


def test_oversize_bodies_and_unknown_routes(server):
    huge = json.dumps({"model": "alpha", "messages": [{"role": "user", "content": "x" * 2_000_000}]})
    r = httpx.post(f"{server}/v1/chat/completions", content=huge, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = _http(server, "GET", "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"]
    assert _http(server, "GET", "/v1/chat/completions").status_code == 405


def test_the_first_sigint_stops_the_server_with_a_request_in_flight(server):
    """Last in this file: it stops the module's server. One Ctrl-C suffices (a hung job once
    made a second press necessary); requests in flight get at most the 5 s grace."""
    import signal
    import threading

    answers = []
    body = {"model": "alpha", "messages": QUESTION, "max_tokens": 200, "stream": True}
    streaming = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=60)))
    streaming.start()
    time.sleep(0.5)
    SERVER_PROC.send_signal(signal.SIGINT)
    assert SERVER_PROC.wait(timeout=30) == 130  # the conventional exit code of Ctrl-C, after one signal
    streaming.join(timeout=30)

