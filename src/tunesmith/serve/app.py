"""The OpenAI-compatible HTTP API (FastAPI) in front of the engine.

Every failure a client can cause is a 4xx with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``; a 5xx means a bug in Tunesmith.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.serve.engine import Engine, GenerationParams, Job, RequestError, chat_prompt, prompt_token_count
from tunesmith.serve.http import read_body
from tunesmith.serve.registry import Registry, confined_path
from tunesmith.serve.schemas import AdapterRequest, ChatRequest, ClassifyRequest, CompletionRequest, ScoreRequest

# Where each kind of model is asked (the error for a model sent to the wrong endpoint names it).
ENDPOINTS = {"causal_lm": "/v1/chat/completions or /v1/completions", "classification": "/v1/classify",
             "reward": "/v1/score"}

log = logging.getLogger("tunesmith.serve")
DEFAULT_CHAT_TOKENS = 256
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
MIN_TEMPERATURE = 1e-3


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(registry: Registry, engine: Engine, *, api_key: str | None = None,
               allowed_dirs: list[Path] | None = None, max_body_bytes: int = 1_000_000) -> FastAPI:
    """The FastAPI app serving ``registry``'s models through ``engine``."""
    app = FastAPI(title="Tunesmith", docs_url=None, redoc_url=None)
    allowed_dirs = allowed_dirs or []

    @app.middleware("http")
    async def _request_log(request: Request, call_next):
        request.state.started = time.perf_counter()
        request.state.id = uuid.uuid4().hex[:12]
        response = await call_next(request)
        if not getattr(request.state, "streaming", False):  # a stream logs itself when it ends
            log_request(request, response.status_code)
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(error_body(f"Internal error: {type(exc).__name__}", "server_error"), status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        if header != f"Bearer {api_key}":
            raise ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key", kind="authentication_error")

    async def read_json(request: Request, schema):
        def too_large():
            return ApiError(413, f"Request body over {max_body_bytes} bytes.", code="request_too_large")

        try:
            body = await read_body(request, max_body_bytes, too_large)
        except TimeoutError:
            raise ApiError(408, "The request body arrived too slowly.", code="request_timeout") from None
        try:
            data = json.loads(body)
            _check_text(data)
        except RecursionError:
            raise ApiError(400, "The body is nested too deeply.", code="invalid_json") from None
        except (ValueError, UnicodeError) as exc:
            raise ApiError(400, f"The body is not valid JSON: {exc}.", code="invalid_json") from exc
        if not isinstance(data, dict):
            raise ApiError(400, f"The body must be a JSON object, not {type(data).__name__}.", code="invalid_json")
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            # For a union (str | list[str]) pydantic reports one error per branch; the deepest
            # one is the most specific ("input.0: should be a string").
            worst = max(exc.errors(), key=lambda e: len(e["loc"]))
            param = ".".join(str(p) for p in worst["loc"] if not _is_union_branch(p)) or None
            message = worst["msg"].removeprefix("Value error, ")
            raise ApiError(400, f"Invalid '{param}': {message}." if param else message, param=param,
                           code="invalid_value") from exc

    def entry_for(name: str, kind: str):
        entry = registry.get(name)
        if entry is None:
            raise ApiError(404, f"The model '{name}' does not exist. Loaded: {', '.join(registry.names()) or 'none'}.",
                           param="model", code="model_not_found")
        if entry.kind != kind:
            endpoint = ENDPOINTS[entry.kind]
            raise ApiError(400, f"The model '{name}' is a {entry.kind} model; use {endpoint}.", param="model",
                           code="wrong_model_type")
        return entry

    def params_for(entry, prompt: str, req, max_tokens: int | None, default: int) -> GenerationParams:
        prompt_tokens = prompt_token_count(entry, prompt)
        if prompt_tokens == 0:
            raise ApiError(400, "The prompt is empty.", param="prompt", code="invalid_value")
        room = entry.context_length - prompt_tokens
        if room < 1:
            raise ApiError(400, f"The prompt has {prompt_tokens} tokens; the model's context is "
                                f"{entry.context_length}.", param="messages", code="context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise ApiError(400, f"max_tokens={max_tokens} plus the prompt's {prompt_tokens} tokens exceeds the "
                                f"model's context of {entry.context_length} tokens.", param="max_tokens",
                           code="context_length_exceeded")
        if req.stream and req.logprob_count is not None:
            raise ApiError(400, "logprobs are returned with whole answers, not streams.", param="logprobs",
                           code="invalid_value")
        # A tiny temperature is greedy decoding in all but name; dividing logits by a denormal
        # one overflows to inf and the probabilities to NaN.
        temperature = req.temperature if req.temperature >= MIN_TEMPERATURE else 0.0
        return GenerationParams(max_tokens=max_tokens or min(default, room), temperature=temperature,
                                top_p=req.top_p, stop=list(req.stop or []), seed=req.seed,
                                logprobs=req.logprob_count)

    async def run(job: Job):
        try:
            return await asyncio.wrap_future(engine.submit(job))
        except RequestError as exc:
            raise ApiError(400, str(exc), exc.param, exc.code) from exc

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": len(registry.entries), "batching": engine.stats}

    @v1.get("/models")
    async def models():
        created = int(time.time())
        return {"object": "list", "data": [
            {"id": e.name, "object": "model", "created": created, "owned_by": "tunesmith", "task": e.kind,
             "method": e.method} for e in registry.entries.values()]}

    @v1.post("/chat/completions")
    async def chat(request: Request):
        req = await read_json(request, ChatRequest)
        entry = entry_for(req.model, "causal_lm")
        try:
            prompt = chat_prompt(entry, [m.plain() for m in req.messages])
        except RequestError as exc:
            raise ApiError(400, str(exc), exc.param, exc.code) from exc
        params = params_for(entry, prompt, req, req.max_completion_tokens or req.max_tokens, DEFAULT_CHAT_TOKENS)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            def chunk(delta: dict, finish=None):
                return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": entry.name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return stream_response(Job("generate", entry, [prompt], params), chunk,
                                   lambda text: {"content": text}, {"role": "assistant", "content": ""}, req, request)
        out = await run(Job("generate", entry, [prompt], params))
        note_usage(request, entry.name, [out])
        return {"id": ident, "object": "chat.completion", "created": created, "model": entry.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]},
                             "logprobs": chat_logprobs(out.get("logprobs")), "finish_reason": out["finish_reason"]}],
                "usage": usage([out])}

    @v1.post("/completions")
    async def completions(request: Request):
        req = await read_json(request, CompletionRequest)
        entry = entry_for(req.model, "causal_lm")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        params = [params_for(entry, p, req, req.max_tokens, DEFAULT_COMPLETION_TOKENS) for p in prompts]
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            if len(prompts) > 1:
                raise ApiError(400, "Streaming takes a single prompt.", param="prompt", code="invalid_value")

            def chunk(text: str, finish=None):
                return {"id": ident, "object": "text_completion", "created": created, "model": entry.name,
                        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
            return stream_response(Job("generate", entry, prompts, params[0]), chunk, lambda text: text, None, req,
                                   request)
        outs = await asyncio.gather(*(run(Job("generate", entry, [p], q)) for p, q in zip(prompts, params)))
        note_usage(request, entry.name, outs)
        return {"id": ident, "object": "text_completion", "created": created, "model": entry.name,
                "choices": [{"index": i, "text": o["text"], "logprobs": completion_logprobs(o.get("logprobs")),
                             "finish_reason": o["finish_reason"]} for i, o in enumerate(outs)],
                "usage": usage(outs)}

    def stream_response(job: Job, chunk, wrap, first, req, request: Request) -> StreamingResponse:
        request.state.streaming = True
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        done = object()
        job.stream = lambda text: loop.call_soon_threadsafe(deltas.put_nowait, text)
        future = engine.submit(job)
        # Runs after the worker's last delta was queued, so the end marker comes last.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(deltas.put_nowait, done))

        async def events():
            if first is not None:
                yield f"data: {json.dumps(chunk(first))}\n\n"
            while (item := await deltas.get()) is not done:
                if item:
                    yield f"data: {json.dumps(chunk(wrap(item)), ensure_ascii=False)}\n\n"
            if future.exception() is not None:
                exc = future.exception()
                kind = "invalid_request_error" if isinstance(exc, RequestError) else "server_error"
                yield f"data: {json.dumps(error_body(str(exc), kind))}\n\n"
            else:
                out = future.result()
                yield f"data: {json.dumps(chunk(wrap('') if first is None else {}, out['finish_reason']))}\n\n"
                note_usage(request, job.entry.name, [out])
                if req.stream_options and req.stream_options.include_usage:
                    # OpenAI's last chunk before [DONE]: no choices, the request's token counts.
                    yield f"data: {json.dumps(dict(chunk(wrap('') if first is None else {}), choices=[], usage=usage([out])))}\n\n"
            log_request(request, 200 if future.exception() is None else 500)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @v1.post("/classify")
    async def classify(request: Request):
        req = await read_json(request, ClassifyRequest)
        entry = entry_for(req.model, "classification")
        texts = [req.input] if isinstance(req.input, str) else req.input
        rows = await run(Job("classify", entry, texts))
        return {"object": "list", "model": entry.name, "data": [dict(index=i, **r) for i, r in enumerate(rows)]}

    @v1.post("/score")
    async def score(request: Request):
        req = await read_json(request, ScoreRequest)
        entry = entry_for(req.model, "reward")
        prompt = req.prompt if isinstance(req.prompt, str) else [m.plain() for m in req.prompt]
        rewards = await run(Job("score", entry, [(prompt, response) for response in req.responses]))
        return {"object": "list", "model": entry.name,
                "data": [{"index": i, "reward": reward} for i, reward in enumerate(rewards)]}

    @v1.post("/adapters", status_code=201)
    async def load_adapter(request: Request):
        manage_allowed()
        req = await read_json(request, AdapterRequest)
        if registry.get(req.name) is not None:
            raise ApiError(409, f"A model named '{req.name}' is already loaded.", param="name", code="name_taken")
        try:
            path = confined_path(req.path, allowed_dirs)
        except ConfigError as exc:
            raise ApiError(403, str(exc), param="path", code="path_not_allowed") from exc
        pickles = [p.name for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if pickles:
            raise ApiError(400, f"The folder holds pickle files ({', '.join(sorted(pickles)[:3])}), which can run code "
                                "when loaded; only safetensors weights are loaded.", param="path", code="invalid_adapter")
        try:
            entry = await asyncio.wrap_future(engine.run_on_worker(lambda: registry.add_run(req.name, path)))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the folder, the client sent it: a 400
            message = str(exc) if isinstance(exc, TunesmithError) else f"{type(exc).__name__}: {exc}"
            raise ApiError(400, f"Could not load {req.path!r} as a Tunesmith run: {message}"[:2000], param="path",
                           code="invalid_adapter") from exc
        return {"id": entry.name, "object": "model", "task": entry.kind, "method": entry.method}

    @v1.delete("/adapters/{name:path}")
    async def unload_adapter(name: str):
        manage_allowed()
        if registry.get(name) is None:
            raise ApiError(404, f"The model '{name}' does not exist.", param="name", code="model_not_found")
        await asyncio.wrap_future(engine.run_on_worker(lambda: registry.remove(name)))
        return {"id": name, "object": "model", "deleted": True}

    def manage_allowed() -> None:
        if api_key is None:
            raise ApiError(403, "Loading and unloading adapters is disabled: the server was started without --api-key.",
                           code="management_disabled", kind="permission_error")

    app.include_router(v1)
    return app


def _check_text(value) -> None:
    """Refuse strings that cannot be UTF-8 (lone surrogates, which JSON's \\ud800 escapes allow)
    before they reach a tokenizer."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def _is_union_branch(part) -> bool:
    return isinstance(part, str) and (part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("function-"))


def note_usage(request: Request, model: str, outs: list[dict]) -> None:
    """Remember what a request used, for its log line."""
    request.state.model, request.state.usage = model, usage(outs)


def log_request(request: Request, status: int) -> None:
    """One line per request: id, route, model, tokens in/out, latency, status."""
    state = request.state
    used = getattr(state, "usage", None) or {}
    log.info("request %s %s %s model=%s tokens_in=%s tokens_out=%s latency_ms=%.0f status=%d",
             getattr(state, "id", "-"), request.method, request.url.path, getattr(state, "model", "-"),
             used.get("prompt_tokens", "-"), used.get("completion_tokens", "-"),
             1000 * (time.perf_counter() - getattr(state, "started", time.perf_counter())), status)


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(entries: list[dict] | None) -> dict | None:
    """OpenAI's chat ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    if entries is None:
        return None
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": _bytes(e["token"]),
                         "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": _bytes(t["token"])}
                                          for t in e["top"]]} for e in entries]}


def completion_logprobs(entries: list[dict] | None) -> dict | None:
    """The completions API's legacy ``logprobs``: tokens, token_logprobs, top_logprobs, text_offset."""
    if entries is None:
        return None
    offsets, position = [], 0
    for e in entries:
        offsets.append(position)
        position += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top"]} for e in entries], "text_offset": offsets}


def usage(outs: list[dict]) -> dict:
    prompt = sum(o["prompt_tokens"] for o in outs)
    completion = sum(o["completion_tokens"] for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
