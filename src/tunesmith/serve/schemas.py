"""Request bodies of the OpenAI-compatible API, validated strictly (a bad field is a 400 naming it).

Unknown fields are ignored rather than refused: OpenAI clients send options (``user``,
``metadata``, ...) that do not change what this server computes. Options that *would* change
the answer and that this server does not implement (tools, response formats,
frequency/presence penalties, logit bias) are refused with a 400 naming the field when set,
never silently ignored; their off values (``logprobs: false``, ``frequency_penalty: 0``,
``response_format: {"type": "text"}``) are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import json

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

MAX_STOP = 4


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]

    def plain(self) -> dict:
        """The message as the chat template expects it (``developer`` is the newer name of ``system``)."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Seed = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class StreamOptions(_Request):
    include_usage: StrictBool = False


# Options this server does not implement -> the values that mean "off" (accepted).
UNSUPPORTED = {
    "frequency_penalty": (None, 0), "presence_penalty": (None, 0),
    "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
    "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
}


class _Sampling(_Request):
    model: StrictStr
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    max_tokens: MaxTokens | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: Seed | None = None
    stream: StrictBool = False
    n: Annotated[StrictInt, Field(ge=1, le=1)] = 1
    stream_options: StreamOptions | None = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _unsupported(cls, value, info):
        off = UNSUPPORTED[info.field_name]
        if any(value == v for v in off):
            return value
        raise ValueError(f"{info.field_name} is not supported by this server; leave it out (off: "
                         f"{json.dumps(off[1])})")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if value is None:
            return []
        value = [value] if isinstance(value, str) else value
        if len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1000)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, value):
        if not any(m.role == "user" for m in value):
            raise ValueError("the conversation needs at least one user message")
        return value


class CompletionRequest(_Sampling):
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=64)]
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None  # the legacy API: the top-k count

    @property
    def logprob_count(self) -> int | None:
        return self.logprobs


class ClassifyRequest(_Request):
    model: StrictStr
    input: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=256)]


class ScoreRequest(_Request):
    """``POST /v1/score``: the reward of each response to one prompt (a reward model)."""

    model: StrictStr
    prompt: StrictStr | Annotated[list[ChatMessage], Field(min_length=1)]
    responses: Annotated[list[StrictStr], Field(min_length=1, max_length=256)]


class AdapterRequest(_Request):
    name: StrictStr
    path: Annotated[StrictStr, Field(min_length=1, max_length=4096)]
