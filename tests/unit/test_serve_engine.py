"""The serving engine in-process: batching never changes a greedy answer, adapters share one
base and unload cleanly, paths are confined, and management needs an API key."""

from __future__ import annotations

import os
import re

import pytest

from tunesmith.synthetic import make_lora_run
from tunesmith.errors import ConfigError
from tunesmith.serve.engine import Engine, GenerationParams, Job, chat_prompt
from tunesmith.serve.registry import Registry, confined_path


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("engine")
    reg = Registry()
    reg.add_base(str(tiny_llama_dir), name="base")
    for name, seed in (("one", 1), ("two", 2)):
        reg.add_run(name, make_lora_run(root / name, tiny_llama_dir, "causal_lm", seed=seed))
    return reg


def _answers(engine, registry, jobs):
    futures = [engine.submit(Job("generate", registry.get(name), [chat_prompt(registry.get(name), msgs)],
                                 GenerationParams(max_tokens=tokens, temperature=0)))
               for name, msgs, tokens in jobs]
    return [f.result(timeout=120)["text"] for f in futures]


def test_batched_greedy_answers_equal_one_at_a_time(registry):
    jobs = [(name, [{"role": "user", "content": text}], tokens)
            for name in ("one", "two", "base")
            for text, tokens in (("hi", 6), ("a much longer question about many things", 9), ("why?", 3))]
    alone = Engine(registry, max_batch=1)
    batched = Engine(registry, max_batch=16, batch_wait_ms=200)
    try:
        expected = _answers(alone, registry, jobs)
        got = _answers(batched, registry, jobs)
    finally:
        alone.close()
        batched.close()
    assert got == expected
    # LoRA adapters and their bare base decode as one batch, each row with its own adapter.
    assert batched.stats["largest_batch"] == 9
    assert alone.stats["largest_batch"] == 1
    assert len(set(expected[:3])) == 3 and expected[:3] != expected[3:6]  # the models really differ


def test_adapters_share_one_base_and_unload_to_a_clean_base(registry, tmp_path, tiny_llama_dir):
    assert len(registry.groups) == 1
    group = next(iter(registry.groups.values()))
    assert group.adapters == {"one", "two"}
    engine = Engine(registry)
    job = [("base", [{"role": "user", "content": "hi"}], 6)]
    try:
        before = _answers(engine, registry, job)
        extra = make_lora_run(tmp_path / "three", tiny_llama_dir, "causal_lm", seed=3)
        engine.run_on_worker(lambda: registry.add_run("three", extra)).result(timeout=60)
        assert group.adapters == {"one", "two", "three"} and len(registry.groups) == 1
        engine.run_on_worker(lambda: registry.remove("three")).result(timeout=60)
        assert "three" not in registry.entries and group.adapters == {"one", "two"}
        assert _answers(engine, registry, job) == before
    finally:
        engine.close()


def test_a_failing_job_fails_only_its_own_request(registry):
    good = [("one", [{"role": "user", "content": "hi"}], 2)]
    fresh = Engine(registry)
    try:
        expected = _answers(fresh, registry, good)
    finally:
        fresh.close()
    assert expected[0], "a non-empty answer, so the comparison below means something"
    engine = Engine(registry)
    try:
        bad = engine.submit(Job("generate", registry.get("one"), [None], GenerationParams(max_tokens=2, temperature=0)))
        # The tokenizer refuses a None prompt; the worker hands that error to this request's future.
        with pytest.raises(ValueError, match=re.escape("text input must be of type `str`")):
            bad.result(timeout=60)
        # The worker survived and the next request gets the answer a fresh engine gives.
        assert _answers(engine, registry, good) == expected
    finally:
        engine.close()


def test_names_are_checked(registry, tiny_llama_dir):
    with pytest.raises(ConfigError, match="already loaded"):
        registry.add_base(str(tiny_llama_dir), name="base")
    with pytest.raises(ConfigError, match="Invalid model name"):
        registry.add_base(str(tiny_llama_dir), name="../evil")


def test_paths_are_confined_even_through_symlinks(tmp_path):
    allowed = tmp_path / "runs"
    (allowed / "good").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", allowed / "link")
    assert confined_path(str(allowed / "good"), [allowed]) == (allowed / "good").resolve()
    for path in (str(allowed / ".." / "secret"), str(allowed / "link"), "/etc"):
        with pytest.raises(ConfigError, match="outside the directories"):
            confined_path(path, [allowed])


def test_adapter_management_is_off_without_an_api_key(registry):
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import create_app

    engine = Engine(registry)
    try:
        client = TestClient(create_app(registry, engine, api_key=None))
        r = client.post("/v1/adapters", json={"name": "x", "path": "runs/x"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "management_disabled"
        assert client.delete("/v1/adapters/one").status_code == 403
        assert "one" in registry.entries
        # Without a key, inference is open (bound to 127.0.0.1 by default).
        r = client.post("/v1/chat/completions", json={"model": "one", "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    finally:
        engine.close()


def test_cli_refuses_bad_adapter_specs():
    from tunesmith.cli import main

    assert main(["serve", "--adapter", "no-equals-sign"]) == 2
    assert main(["serve"]) == 2


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_methods_are_served_as_their_own_models_with_their_prompts(registry, method, tmp_path, tiny_llama_dir):
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType

    from tunesmith.methods.saved import load_trained
    from tunesmith.objectives.causal_lm import CausalLMObjective

    config = (PrefixTuningConfig if method == "prefix" else PromptTuningConfig)(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=8)
    run = make_lora_run(tmp_path / method, tiny_llama_dir, "causal_lm", seed=5, peft_config=config, method=method)
    engine = Engine(registry)
    question = [{"role": "user", "content": "hi there"}]
    try:
        engine.run_on_worker(lambda: registry.add_run(method, run)).result(timeout=60)
        entry = registry.get(method)
        assert entry.group is None and entry.model is not None  # not on the shared base
        served, base = _answers(engine, registry, [(method, question, 6), ("base", question, 6)])
    finally:
        engine.run_on_worker(lambda: registry.remove(method)).result(timeout=60)
        engine.close()
    model, tokenizer, _ = load_trained(run / "final")
    expected = CausalLMObjective(tokenizer, 64).answer(model, ["hi there"], 6, "cpu")[0]
    assert served.strip() == expected
    assert served != base  # the virtual tokens reached the answer


def test_a_run_folder_whose_final_links_outside_is_refused(tmp_path):
    allowed = tmp_path / "runs"
    (allowed / "run").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "adapter_model.safetensors").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", allowed / "run" / "final")
    with pytest.raises(ConfigError, match=r"final -> .*elsewhere.* is outside"):
        confined_path(str(allowed / "run"), [allowed])
    with pytest.raises(ConfigError, match="NUL byte"):
        confined_path(str(allowed / "run\x00"), [allowed])


def test_every_load_and_unload_queued_behind_generations_is_answered(registry, tmp_path, tiny_llama_dir):
    """Loads and unloads arriving while a batch of generations forms all run and all answer
    (they were once grouped under one batch key and only the first ran)."""
    engine = Engine(registry, max_batch=16, batch_wait_ms=300)
    extra = make_lora_run(tmp_path / "extra", tiny_llama_dir, "causal_lm", seed=4)
    try:
        prompt = chat_prompt(registry.get("one"), [{"role": "user", "content": "hi"}])
        futures = [engine.submit(Job("generate", registry.get("one"), [prompt], GenerationParams(max_tokens=3,
                                                                                                 temperature=0)))]
        calls = []
        for i in range(6):
            calls.append(engine.run_on_worker(lambda i=i: registry.add_run(f"flood-{i}", extra).name))
            futures.append(engine.submit(Job("generate", registry.get("two"), [prompt],
                                             GenerationParams(max_tokens=3, temperature=0))))
        calls += [engine.run_on_worker(lambda i=i: registry.remove(f"flood-{i}") or f"gone-{i}") for i in range(6)]
        assert [c.result(timeout=120) for c in calls] == [f"flood-{i}" for i in range(6)] + [f"gone-{i}" for i in range(6)]
        texts = [f.result(timeout=120)["text"] for f in futures]
        expected = _answers(engine, registry, [(name, [{"role": "user", "content": "hi"}], 3) for name in ("one", "two")])
        assert texts == [expected[0]] + [expected[1]] * 6  # the generations around the loads are undisturbed
        assert not any(name.startswith("flood-") for name in registry.entries)
    finally:
        engine.close()
