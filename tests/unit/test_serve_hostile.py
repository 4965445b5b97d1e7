"""The server under hostile bodies and folders: every bad request is a 4xx with OpenAI's error
body, never a 500 or a hang (docs/SECURITY.md). Includes a property-based fuzz of request
bodies (bounded, so it runs in CI)."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.serve.app import create_app
from tunesmith.serve.engine import Engine
from tunesmith.serve.registry import Registry
from tunesmith.synthetic import make_lora_run

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir):
    runs = tmp_path_factory.mktemp("runs")
    good = make_lora_run(runs / "good", tiny_llama_dir, "causal_lm", seed=1)
    registry = Registry()
    registry.add_base(str(tiny_llama_dir), name="base")
    engine = Engine(registry)
    app = create_app(registry, engine, api_key=KEY, allowed_dirs=[runs])
    yield TestClient(app), runs, good
    engine.close()


def _chat(client, **body):
    return client.post("/v1/chat/completions", headers=AUTH,
                       json={"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **body})


def _is_openai_error(response, status: int) -> bool:
    error = response.json().get("error", {})
    return response.status_code == status and set(error) == {"message", "type", "param", "code"}


def test_a_denormal_temperature_decodes_greedily_instead_of_failing(server):
    client, _, _ = server
    greedy = _chat(client, temperature=0)
    tiny = _chat(client, temperature=5e-324)
    assert tiny.status_code == 200
    assert tiny.json()["choices"][0]["message"]["content"] == greedy.json()["choices"][0]["message"]["content"]


def test_lone_surrogates_deep_nesting_and_empty_prompts_are_400(server):
    client, _, _ = server
    surrogate = b'{"model": "base", "messages": [{"role": "user", "content": "\\ud800"}]}'
    response = client.post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                           content=surrogate)
    assert _is_openai_error(response, 400) and "not valid JSON" in response.json()["error"]["message"]
    deep = client.post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                       content=b"[" * 100_000 + b"]" * 100_000)
    assert _is_openai_error(deep, 400) and "nested too deeply" in deep.json()["error"]["message"]
    empty = client.post("/v1/completions", headers=AUTH, json={"model": "base", "prompt": "", "max_tokens": 2})
    assert _is_openai_error(empty, 400) and empty.json()["error"]["message"] == "The prompt is empty."


@pytest.mark.parametrize("damage", ["bad-meta", "garbage-config", "truncated-weights", "pickle", "no-final"])
def test_malformed_adapter_folders_are_400_naming_the_problem(server, damage):
    client, runs, good = server
    broken = runs / f"broken-{damage}"
    shutil.copytree(good, broken)
    final = broken / "final"
    if damage == "bad-meta":
        (final / "tunesmith.json").write_text("{not json")
    elif damage == "garbage-config":
        (final / "adapter_config.json").write_text(json.dumps({"peft_type": "NOPE", "r": "x"}))
    elif damage == "truncated-weights":
        weights = final / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "pickle":
        (final / "adapter_model.bin").write_bytes(b"\x80\x04cos\nsystem\n.")
    else:
        shutil.rmtree(final)
    response = client.post("/v1/adapters", headers=AUTH, json={"name": f"x-{damage}", "path": str(broken)})
    assert _is_openai_error(response, 400), response.text
    message = response.json()["error"]["message"]
    assert {"pickle": "pickle files", "no-final": "neither a run directory"}.get(damage, "Could not load") in message
    assert client.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == "base"  # nothing half-loaded
    assert f"x-{damage}" not in [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]]


def test_a_nul_byte_in_an_adapter_path_is_refused(server):
    client, runs, _ = server
    response = client.post("/v1/adapters", headers=AUTH, json={"name": "nul", "path": str(runs / "good\x00")})
    assert 400 <= response.status_code < 500 and "NUL" in response.json()["error"]["message"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
BODIES = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["base", "missing", ""]) | JSON_VALUES,
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "x"]),
                                                "content": st.text(max_size=30) | JSON_VALUES}), max_size=3) | JSON_VALUES,
    "prompt": st.text(max_size=30) | JSON_VALUES,
    "max_tokens": st.integers(-5, 4) | JSON_VALUES,
    "temperature": st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=3) | JSON_VALUES,
    "top_p": st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=2) | JSON_VALUES,
    "stop": JSON_VALUES, "stream": st.booleans(), "logprobs": JSON_VALUES, "seed": JSON_VALUES,
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(body=BODIES, endpoint=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_no_request_body_gives_a_server_error(server, body, endpoint):
    client, _, _ = server
    response = client.post(endpoint, headers=AUTH, json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert _is_openai_error(response, response.status_code)


def test_a_client_that_never_finishes_its_headers_is_disconnected(server):
    import socket

    from tunesmith.serve.http import SlowClientProtocol
    from tunesmith.ui.app import serve_in_thread

    class Quick(SlowClientProtocol):
        headers_timeout_s = 0.5

    client, _, _ = server
    running, url = serve_in_thread(client.app, protocol=Quick)
    host, port = url.removeprefix("http://").split(":")
    try:
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ... and nothing more
        slow.settimeout(5)
        assert slow.recv(100) == b""  # closed by the server (our own 5 s timeout would raise instead)
        fine = socket.create_connection((host, int(port)))
        fine.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        fine.settimeout(5)
        assert fine.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        running.should_exit = True
