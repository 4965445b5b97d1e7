"""The worker that runs every model call: dynamic batching, generation, classification.

Requests are queued; a single worker thread takes the first one, waits up to
``batch_wait_ms`` for more (at most ``max_batch``), groups them by model and by
decoding settings, and runs each group as one padded batch. One thread owns the models,
so adapters switch between batches, never during one. LoRA adapters of one base share a
batch: PEFT's ``adapter_names`` applies each row's own adapter (the bare base is
``__base__``). Greedy answers do not depend on what they were batched with (left padding
+ attention mask), which a test checks.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from tunesmith.data.template import answer_ids, fit_answer, render_prompt, with_system_prompt
from tunesmith.eval.generate import greedy_without_cache, stop_token_ids, uses_deep_prompts


# A fast tokenizer keeps its padding/truncation settings on the shared Rust object, and
# every call rewrites them: a request handler counting prompt tokens while the worker pads
# a batch would corrupt one of the two calls (seen as a 500 under 50 concurrent requests).
TOKENIZER_LOCK = threading.Lock()


class RequestError(Exception):
    """A request the model cannot serve as asked (a 400 for the client, not a server fault)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


@dataclass
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # None: no log-probabilities; k >= 0: each generated token's log-probability and the k
    # most likely tokens at its position (the model's own distribution, before temperature/top_p).
    logprobs: int | None = None


@dataclass
class Job:
    kind: str  # "generate" | "classify" | "score" | "call"
    entry: object = None
    inputs: list = field(default_factory=list)  # prompt strings, texts to classify, or (prompt, response) pairs
    params: GenerationParams | None = None
    stream: object = None  # a callable taking text deltas (then None at the end), for streaming
    call: object = None  # kind "call": a function to run on the worker thread (load/unload)
    future: Future = field(default_factory=Future)

    def batch_key(self):
        if self.kind == "call":
            return ("call", id(self))  # each load/unload runs (and is answered) on its own
        if self.kind != "generate":
            return (self.kind, id(self.entry))
        p = self.params
        deep_prompts = self.entry.model is not None and uses_deep_prompts(self.entry.model)
        if self.stream is not None or deep_prompts or (p.temperature > 0 and p.seed is not None) or p.logprobs is not None:
            return ("alone", id(self))  # streamed, seeded, with log-probs, or decoded without a cache: one at a time
        sampling = (p.temperature, p.top_p) if p.temperature > 0 else None
        # LoRA adapters on one base decode together, each row with its own adapter.
        model_key = self.entry.mixed_batch_key() or id(self.entry)
        return ("generate", model_key, sampling)


class Engine:
    """Owns the registry's models; ``submit`` returns a Future with the job's result."""

    def __init__(self, registry, max_batch: int = 8, batch_wait_ms: float = 10.0):
        self.registry = registry
        self.max_batch = max(1, max_batch)
        self.batch_wait = batch_wait_ms / 1000
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.stats = {"batches": 0, "jobs": 0, "largest_batch": 0}
        self.worker = threading.Thread(target=self._work, name="tunesmith-engine", daemon=True)
        self.worker.start()

    def submit(self, job: Job) -> Future:
        self.jobs.put(job)
        return job.future

    def run_on_worker(self, fn) -> Future:
        """Run ``fn()`` on the worker thread between batches (loading/unloading models)."""
        return self.submit(Job("call", call=fn))

    def close(self) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            pending = [first]
            deadline = time.perf_counter() + self.batch_wait
            while first.kind != "call" and len(pending) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = self.jobs.get(timeout=remaining)
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)
                    break
                pending.append(job)
            groups: dict = {}
            for job in pending:
                groups.setdefault(job.batch_key(), []).append(job)
            for jobs in groups.values():
                self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        self.stats["batches"] += 1
        self.stats["jobs"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        try:
            kind = jobs[0].kind
            if kind == "call":
                results = [jobs[0].call()]
            elif kind == "classify":
                results = classify_batch(jobs)
            elif kind == "score":
                results = score_batch(jobs)
            else:
                results = generate_batch(jobs)
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)


@torch.inference_mode()
def classify_batch(jobs: list[Job]) -> list[list[dict]]:
    """One padded forward pass for every text of every job; per text: label + probabilities."""
    entry = jobs[0].entry
    texts = [t for job in jobs for t in job.inputs]
    labels = entry.meta.get("labels") or []
    model, context = entry.activate()
    tokenizer = entry.tokenizer
    with TOKENIZER_LOCK:
        tokenizer.padding_side = "right"
        enc = tokenizer(texts, padding=True, truncation=True, max_length=entry.meta.get("max_length") or 512,
                        return_tensors="pt")
    with context:
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    probs = torch.softmax(logits.float(), -1).tolist()
    results, start = [], 0
    for job in jobs:
        rows = probs[start : start + len(job.inputs)]
        start += len(job.inputs)
        results.append([
            {"label": labels[max(range(len(p)), key=p.__getitem__)],
             "probabilities": {label: round(v, 6) for label, v in zip(labels, p)}}
            for p in rows
        ])
    return results


@torch.inference_mode()
def score_batch(jobs: list[Job]) -> list[list[float]]:
    """One padded forward pass of a reward model over every (prompt, response) of every
    job, rendered as in its training (``data.template.answer_ids``); per response its reward."""
    entry = jobs[0].entry
    with TOKENIZER_LOCK:
        rows = [fit_answer(*answer_ids(entry.tokenizer, prompt, response, entry.meta.get("system_prompt")),
                           entry.meta.get("max_length") or 512)
                for job in jobs for prompt, response in job.inputs]
    pad = entry.tokenizer.pad_token_id if entry.tokenizer.pad_token_id is not None else 0
    ids = pad_sequence([torch.tensor(r) for r in rows], batch_first=True, padding_value=pad)
    mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
    model, context = entry.activate()
    with context:
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
    results, start = [], 0
    for job in jobs:
        results.append(rewards[start : start + len(job.inputs)])
        start += len(job.inputs)
    return results


def chat_prompt(entry, messages: list[dict]) -> str:
    """The text the model continues: the run's chat template and default system prompt."""
    if entry.tokenizer.chat_template is None:
        raise RequestError(f"Model '{entry.name}' has no chat template; use /v1/completions.", "model",
                           "model_not_chat")
    return render_prompt(entry.tokenizer, with_system_prompt(messages, entry.meta.get("system_prompt")))


def prompt_token_count(entry, prompt: str) -> int:
    with TOKENIZER_LOCK:
        return len(entry.tokenizer(prompt, add_special_tokens=False)["input_ids"])


class _StopWatcher:
    """Incremental decoding for one streamed answer: emits text deltas, stops at a stop string."""

    def __init__(self, tokenizer, stop: list[str], emit, stop_ids: set[int]):
        self.tokenizer, self.stop, self.emit, self.stop_ids = tokenizer, stop, emit, stop_ids
        self.ids: list[int] = []
        self.sent = 0
        self.text = ""
        self.done = False
        self.stopped = False

    def add(self, token_id: int) -> None:
        if self.done:
            return
        if token_id in self.stop_ids:
            self.done = self.stopped = True
            return
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = _first_stop(text, self.stop)
        if cut is not None:
            text, self.done, self.stopped = text[:cut], True, True
        self.text = text
        # Hold back text that could still become a stop string, and half-decoded characters.
        hold = 0 if self.done else max((len(s) - 1 for s in self.stop), default=0)
        safe = len(text) - hold
        if not self.done and text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        if safe > self.sent:
            self.emit(text[self.sent : safe])
            self.sent = safe

    def finish(self) -> None:
        if len(self.text) > self.sent:
            self.emit(self.text[self.sent :])
            self.sent = len(self.text)


def _first_stop(text: str, stop: list[str]) -> int | None:
    hits = [text.find(s) for s in stop if s and s in text]
    return min(hits) if hits else None


@torch.inference_mode()
def generate_batch(jobs: list[Job]) -> list[dict]:
    """Generate for every job of a group (same model, same decoding settings) in one batch.

    Returns per job ``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}``.
    """
    entry = jobs[0].entry
    tokenizer = entry.tokenizer
    params = jobs[0].params
    prompts = [job.inputs[0] for job in jobs]
    with TOKENIZER_LOCK:
        tokenizer.padding_side = "left"  # generation appends on the right, so padding goes left
        enc = tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    max_new = max(job.params.max_tokens for job in jobs)
    per_row = {}
    if len({id(job.entry) for job in jobs}) > 1:  # several adapters of one base (see Job.batch_key)
        model, context = entry.group.peft, nullcontext()
        per_row = {"adapter_names": [job.entry.peft_adapter_name for job in jobs]}
    else:
        model, context = entry.activate()
    stop_ids = stop_token_ids(model, tokenizer)
    watcher = None
    if jobs[0].stream is not None:
        watcher = _StopWatcher(tokenizer, params.stop, jobs[0].stream, stop_ids)
    if params.logprobs is not None and uses_deep_prompts(model):
        raise RequestError("logprobs are not available for prefix-tuned and P-tuning v2 models.", "logprobs",
                           "unsupported_parameter")
    logits = None
    with context:
        if uses_deep_prompts(model):  # PEFT's generate() drops deep prompts under transformers 5
            out = greedy_without_cache(model, enc["input_ids"], max_new, stop_ids)  # batch_key runs these alone
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            if watcher is not None:
                for token in new_tokens[0].tolist():
                    watcher.add(token)
        else:
            kwargs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop_ids) or None, **per_row)
            kwargs.update(_sampling(params))
            if watcher is not None:
                kwargs.update(streamer=_Streamer(watcher), stopping_criteria=_stopping(watcher))
            if params.logprobs is not None:
                kwargs.update(output_logits=True, return_dict_in_generate=True)  # raw logits of every step
            out = model.generate(**kwargs)
            if params.logprobs is not None:
                out, logits = out.sequences, out.logits
            new_tokens = out[:, enc["input_ids"].shape[1] :]
    results = []
    for i, job in enumerate(jobs):
        ids = new_tokens[i].tolist()[: job.params.max_tokens]
        results.append(_finish(tokenizer, ids, job, stop_ids, int(enc["attention_mask"][i].sum())))
        if logits is not None:
            kept = results[-1]["completion_tokens"]
            results[-1]["logprobs"] = token_logprobs(tokenizer, [step[i] for step in logits[:kept]], ids[:kept],
                                                     params.logprobs)
    if watcher is not None:
        watcher.finish()
        results[0]["text"] = watcher.text
        results[0]["finish_reason"] = "stop" if watcher.stopped else "length"
    return results


def token_logprobs(tokenizer, step_logits: list[torch.Tensor], ids: list[int], top: int) -> list[dict]:
    """Per generated token: its text, log-probability, and the ``top`` most likely tokens."""
    entries = []
    for logits, token in zip(step_logits, ids):
        logprobs = torch.log_softmax(logits.float(), -1)
        best = logprobs.topk(top) if top else None
        entries.append({
            "token": tokenizer.decode([token]), "id": token, "logprob": float(logprobs[token]),
            "top": [] if best is None else [{"token": tokenizer.decode([j]), "id": j, "logprob": float(v)}
                                             for v, j in zip(best.values.tolist(), best.indices.tolist())]})
    return entries


def _sampling(params: GenerationParams) -> dict:
    if params.temperature == 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if params.seed is not None:  # the worker is the only thread drawing random numbers
        torch.manual_seed(params.seed)
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


def _finish(tokenizer, ids: list[int], job: Job, stop_ids: set[int], prompt_tokens: int) -> dict:
    reason = "length"
    for k, token in enumerate(ids):
        if token in stop_ids:
            ids, reason = ids[:k], "stop"
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = _first_stop(text, job.params.stop)
    if cut is not None:
        text, reason = text[:cut], "stop"
    return {"text": text, "finish_reason": reason, "prompt_tokens": prompt_tokens, "completion_tokens": len(ids)}


class _Streamer:
    """transformers' streamer protocol: ``put`` gets the prompt first, then each new token."""

    def __init__(self, watcher: _StopWatcher):
        self.watcher, self.prompt_seen = watcher, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.watcher.add(int(token))

    def end(self) -> None:
        pass


def _stopping(watcher: _StopWatcher):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenWatcherDone(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), watcher.done, dtype=torch.bool)

    return StoppingCriteriaList([StopWhenWatcherDone()])
