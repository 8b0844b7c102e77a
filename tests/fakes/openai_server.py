"""A fake OpenAI-compatible server: real HTTP, scripted replies, every request recorded.

It speaks `POST /v1/chat/completions` (plain and `stream: true`), so the real `openai` client is
used unchanged: point it (or `OPENAI_BASE_URL`) at `server.base_url`.

Usage::

    from tests.fakes.openai_server import FakeOpenAI, Reply, fake_openai_server

    async with fake_openai_server() as server:          # or the `fake_openai` fixture
        server.script(
            Reply.json({"title": ..., "tasks": [...]}),  # first request gets this
            "plain text answer",                         # a str is shorthand for Reply.text(...)
            Reply.http_error(429, retry_after=0.01),     # then a rate limit (the SDK retries)
            lambda request: Reply.text(request.last_user.upper()),  # computed from the request
        )
        ... run code that talks to server.base_url ...
        assert server.requests[0].is_structured       # the planner asked for json_schema output
        assert "Tokyo" in server.requests[1].transcript

A planner answer is in the planner's wire format (arguments as a JSON string, `args_json`):
build it from a canonical plan with `Reply.json(scheduler.planning.planner.to_wire(plan))`.

Replies are consumed in order, one per request. When the queue is empty the `fallback` responder
answers (set it with `server.respond_with(fn)`; useful in end-to-end tests that answer by request
content, e.g. `lambda r: plan if r.is_structured else "done"`). With neither, the server answers
500 with `x-should-retry: false` and a message saying no reply was scripted, and records the
request in `server.unscripted` so a test can assert that nothing unexpected was asked. A responder
that raises gets the same 500 answer, and its exception lands in `server.responder_errors`.

Strict structured output is enforced as OpenAI does: a `json_schema` response format with
`strict: true` whose schema breaks OpenAI's rules for strict mode (every object closed with
`additionalProperties: false` and listing every property in `required`, an object at the root,
a valid name) is refused with OpenAI's 400, and a scripted answer to such a request must fit the
schema (OpenAI's output always does, short of a refusal or a cut-off answer): one that does not
is the test's bug and is answered 500, with the problem in `responder_errors`. A test that plays
a server without structured output scripts `Reply(..., off_schema=True)`.

A streamed reply can be paced by the test: `Reply.paced(["Hel", "lo"], pacer)` sends each piece
only once `pacer.release()` lets it go, and `pacer.sent_at[i]` records (`time.perf_counter()`)
when piece i was written, so a test can measure what happened after the model's first token
without sleeping. `include_usage` in `stream_options` puts usage in a last, choice-less chunk.

A responder may be async (e.g. to wait on an `asyncio.Event` and hold a call open while a test
cancels a run). `await server.wait_for_requests(n)` waits, without sleeping, until n requests have
arrived.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web
from jsonschema import Draft202012Validator

from tests.fakes.serve import serve_locally

FAKE_API_KEY = "sk-fake-test-key-0123456789"
"""An API key to configure clients with; the server records but never checks it."""


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One recorded request: its JSON body and headers, with readers for common questions."""

    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def is_structured(self) -> bool:
        """True when the request asks for `response_format` of type json_schema."""
        response_format = self.body.get("response_format")
        return isinstance(response_format, dict) and response_format.get("type") == "json_schema"

    @property
    def schema_name(self) -> str | None:
        """The name of the requested json_schema response format, if any."""
        response_format = self.body.get("response_format")
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            return None
        spec = response_format.get("json_schema")
        name = spec.get("name") if isinstance(spec, dict) else None
        return name if isinstance(name, str) else None

    @property
    def is_plan_request(self) -> bool:
        """A planner request (its strict schema is dagbot's plan format)."""
        return self.schema_name == "dagbot_plan"

    @property
    def is_decision(self) -> bool:
        """A final step's request: answer, or ask for another round (strict JSON)."""
        return self.schema_name == "dagbot_answer"

    @property
    def is_stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def system(self) -> str:
        """Text of the system (or developer) messages."""
        return "\n".join(
            message_text(m) for m in self.messages if m.get("role") in ("system", "developer")
        )

    @property
    def last_user(self) -> str:
        """Text of the last user message ('' when there is none)."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""

    @property
    def transcript(self) -> str:
        """Every message's text, joined by newlines: handy for `in` assertions."""
        return "\n".join(message_text(m) for m in self.messages)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One scripted answer: a completion (content, refusal, finish reason) or an HTTP error."""

    content: str | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    error_message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    pieces: tuple[str, ...] | None = None
    """When streamed: the content deltas, in order (default: the content cut after each space)."""
    pacer: Pacer | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()
    """(function name, arguments JSON) of each tool call the model makes."""
    page: str | None = None
    """A 200 answer that is a web page, not JSON: what a proxy or a wrong base URL sends."""
    off_schema: bool = False
    """The answer need not fit the request's strict schema: a server without structured output."""

    @classmethod
    def text(cls, content: str, **kwargs: Any) -> Reply:
        return cls(content=content, **kwargs)

    @classmethod
    def paced(cls, pieces: list[str], pacer: Pacer | None = None, **kwargs: Any) -> Reply:
        """A text answer streamed as exactly these deltas, each sent when `pacer` allows."""
        return cls(content="".join(pieces), pieces=tuple(pieces), pacer=pacer, **kwargs)

    @classmethod
    def json(cls, value: Any, **kwargs: Any) -> Reply:
        """A completion whose content is `value` encoded as JSON (a structured-output answer)."""
        return cls(content=json.dumps(value), **kwargs)

    @classmethod
    def answer(cls, text: str, **kwargs: Any) -> Reply:
        """The final step's decision to answer with `text` (its strict JSON format)."""
        return cls.json({"action": "answer", "answer": text, "reason": ""}, **kwargs)

    @classmethod
    def replan(cls, reason: str, **kwargs: Any) -> Reply:
        """The final step's decision that another round of steps is needed, and why."""
        return cls.json({"action": "replan", "answer": "", "reason": reason}, **kwargs)

    @classmethod
    def paced_answer(cls, pieces: list[str], pacer: Pacer | None = None, **kwargs: Any) -> Reply:
        """`answer` streamed so that the answer text arrives in exactly these pieces (the JSON
        around it rides on the first and last), each sent when `pacer` allows."""
        encoded = [json.dumps(piece)[1:-1] for piece in pieces]
        encoded[0] = '{"action": "answer", "answer": "' + encoded[0]
        encoded[-1] += '", "reason": ""}'
        return cls(content="".join(encoded), pieces=tuple(encoded), pacer=pacer, **kwargs)

    @classmethod
    def tool_call(cls, name: str, arguments: Any = None) -> Reply:
        """The model calls a function instead of answering: no content, `finish_reason` tool_calls.

        Models behind OpenAI-compatible servers do this even when the request offers no tools
        (the server's chat template parses tool-call syntax out of the text).
        """
        return cls(
            content=None,
            finish_reason="tool_calls",
            tool_calls=((name, json.dumps(arguments if arguments is not None else {})),),
        )

    @classmethod
    def web_page(cls, html: str = "<html><body>Please sign in</body></html>") -> Reply:
        return cls(page=html)

    @classmethod
    def refused(cls, reason: str = "I can't help with that.") -> Reply:
        return cls(refusal=reason)

    @classmethod
    def truncated(cls, partial: str = '{"title": "cut') -> Reply:
        """A completion cut off at the token limit (`finish_reason: length`)."""
        return cls(content=partial, finish_reason="length")

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> Reply:
        """An error response as OpenAI sends it; `retry_after` sets the Retry-After header."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = repr(retry_after)
        if should_retry is not None:
            headers["x-should-retry"] = "true" if should_retry else "false"
        return cls(status=status, error_message=message or f"fake error {status}", headers=headers)


class Pacer:
    """Releases a streamed reply's pieces when the test says so, and notes when each was sent."""

    def __init__(self) -> None:
        self.released = 0
        self.sent_at: list[float] = []
        self._changed = asyncio.Condition()

    def release(self, count: int = 1) -> None:
        """Let `count` more pieces go."""
        self.released += count
        asyncio.get_running_loop().create_task(self._notify())

    def release_all(self) -> None:
        self.release(1_000_000)

    async def wait_sent(self, count: int) -> None:
        """Until `count` pieces have been written to the client."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.sent_at) >= count)

    async def before_piece(self, index: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.released > index)

    async def after_piece(self) -> None:
        self.sent_at.append(time.perf_counter())
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


Responder = Callable[[ChatRequest], Reply | str | Awaitable[Reply | str]]
Step = Reply | str | Responder


class FakeOpenAI:
    """The server's state: the reply script, the fallback responder and the recorded requests."""

    def __init__(self) -> None:
        self.base_url = ""
        self.api_key = FAKE_API_KEY
        self.requests: list[ChatRequest] = []
        self.unscripted: list[ChatRequest] = []
        self.responder_errors: list[Exception] = []
        self.fallback: Responder | None = None
        self._script: deque[Step] = deque()
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)

    def script(self, *steps: Step) -> None:
        """Queue replies, answered in order, one per request."""
        self._script.extend(steps)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer requests with `responder` whenever the script is empty."""
        self.fallback = responder

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        return len(self._script)

    @property
    def structured_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.is_structured]

    @property
    def plan_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.is_plan_request]

    @property
    def text_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if not r.is_structured]

    async def wait_for_requests(self, count: int) -> list[ChatRequest]:
        """Wait until at least `count` requests have arrived; return them."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    async def handle(self, http_request: web.Request) -> web.StreamResponse:
        try:
            body = await http_request.json()
        except json.JSONDecodeError:
            return _error_response(Reply.http_error(400, "request body is not JSON"))
        if not isinstance(body, dict):
            return _error_response(Reply.http_error(400, "request body is not a JSON object"))
        request = ChatRequest(body=body, headers=dict(http_request.headers))
        async with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

        schema_error = strict_schema_error(request.body.get("response_format"))
        if schema_error is not None:
            return _error_response(Reply.http_error(400, schema_error), param="response_format")
        reply = await self._reply_for(request)
        misfit = answer_misfit(request, reply)
        if misfit is not None:
            self.responder_errors.append(AssertionError(misfit))
            reply = Reply.http_error(500, f"fake OpenAI server: {misfit}", should_retry=False)
        if reply.status != 200:
            return _error_response(reply)
        if reply.page is not None:
            return web.Response(text=reply.page, content_type="text/html")
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        model = request.model or "fake-model"
        if request.is_stream:
            return await _stream(http_request, reply, completion_id, model, request)
        return web.json_response(_completion(reply, completion_id, model), headers=reply.headers)

    async def _reply_for(self, request: ChatRequest) -> Reply:
        step: Step | None = self._script.popleft() if self._script else self.fallback
        if step is None:
            self.unscripted.append(request)
            return Reply.http_error(
                500,
                f"fake OpenAI server: no reply scripted for request {len(self.requests)}",
                should_retry=False,
            )
        if callable(step):
            try:
                produced = step(request)
                step = await produced if inspect.isawaitable(produced) else produced
            except Exception as error:
                # A broken responder is the test's bug: answer so the SDK does not retry, and keep
                # the error for the test to see.
                self.responder_errors.append(error)
                return Reply.http_error(
                    500, f"fake OpenAI server: responder raised {error!r}", should_retry=False
                )
        return Reply.text(step) if isinstance(step, str) else step


def _completion(reply: Reply, completion_id: str, model: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.content,
                    "refusal": reply.refusal,
                    **(
                        {"tool_calls": _tool_calls(reply, completion_id)}
                        if reply.tool_calls
                        else {}
                    ),
                },
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(reply),
    }


def _tool_calls(reply: Reply, completion_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{completion_id}_{index}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for index, (name, arguments) in enumerate(reply.tool_calls)
    ]


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


async def _stream(
    http_request: web.Request,
    reply: Reply,
    completion_id: str,
    model: str,
    request: ChatRequest,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers}
    )
    await response.prepare(http_request)
    created = int(time.time())

    async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    if reply.refusal is not None:
        await send([{"index": 0, "delta": {"refusal": reply.refusal}, "finish_reason": None}])
    pieces = reply.pieces if reply.pieces is not None else tuple(_pieces(reply.content or ""))
    for index, piece in enumerate(pieces):
        if reply.pacer is not None:
            await reply.pacer.before_piece(index)
        await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        if reply.pacer is not None:
            await reply.pacer.after_piece()
    for index, call in enumerate(_tool_calls(reply, completion_id)):
        delta = {"tool_calls": [{"index": index, **call}]}
        await send([{"index": 0, "delta": delta, "finish_reason": None}])
    await send([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
    options = request.body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        await send([], usage=_usage(reply))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _pieces(text: str) -> list[str]:
    """Split text into word-sized pieces that join back to exactly `text`."""
    pieces: list[str] = []
    current = ""
    for char in text:
        current += char
        if char.isspace():
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def strict_schema_error(response_format: Any) -> str | None:
    """OpenAI's 400 message for a strict json_schema response format it refuses, else None."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        return "Missing required parameter: 'response_format.json_schema'."
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        return (
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
        )
    schema = spec.get("schema")
    if not spec.get("strict") or not isinstance(schema, dict):
        return None
    if schema.get("type") != "object":
        return (
            f"Invalid schema for response_format '{name}': schema must be a JSON Schema of "
            "'type: \"object\"', got 'type: \"" + str(schema.get("type")) + "\"'."
        )
    problem = _strict_problem(schema, ())
    return f"Invalid schema for response_format '{name}': {problem}" if problem else None


def _strict_problem(schema: Any, where: tuple[str, ...]) -> str | None:
    if not isinstance(schema, dict):
        return None
    context = f"In context={where!r}, "
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return context + "'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties", {})
        required = schema.get("required")
        missing = [
            key for key in properties if not isinstance(required, list) or key not in required
        ]
        if missing:
            return (
                context + "'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        extra = [key for key in required or [] if key not in properties]
        if extra:
            return context + f"'required' names '{extra[0]}', which is not in properties."
        for key, sub in properties.items():
            found = _strict_problem(sub, (*where, "properties", key))
            if found:
                return found
    if "items" in schema:
        found = _strict_problem(schema["items"], (*where, "items"))
        if found:
            return found
    for keyword in ("anyOf",):
        for index, sub in enumerate(schema.get(keyword, [])):
            found = _strict_problem(sub, (*where, keyword, str(index)))
            if found:
                return found
    for name, sub in schema.get("$defs", {}).items():
        found = _strict_problem(sub, (*where, "$defs", name))
        if found:
            return found
    return None


def answer_misfit(request: ChatRequest, reply: Reply) -> str | None:
    """Why a scripted answer to a strict request is one OpenAI would never send, or None."""
    response_format = request.body.get("response_format")
    if (
        reply.off_schema
        or reply.status != 200
        or reply.page is not None
        or reply.refusal is not None
        or reply.finish_reason != "stop"
        or reply.tool_calls
        or not isinstance(response_format, dict)
        or response_format.get("type") != "json_schema"
    ):
        return None
    spec = response_format.get("json_schema") or {}
    if not spec.get("strict"):
        return None
    try:
        value = json.loads(reply.content or "")
    except json.JSONDecodeError:
        return "the scripted answer to a strict json_schema request is not JSON"
    errors = sorted(Draft202012Validator(spec.get("schema", {})).iter_errors(value), key=str)
    if errors:
        where = "/".join(str(part) for part in errors[0].absolute_path) or "(root)"
        return f"the scripted answer does not fit the strict schema at {where}: {errors[0].message}"
    return None


def _error_response(reply: Reply, *, param: str | None = None) -> web.Response:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(reply.status, "server_error")
    body = {"error": {"message": reply.error_message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=reply.status, headers=reply.headers)


@dataclass(frozen=True, kw_only=True)
class UsageCall:
    model: str
    prompt_tokens: int
    completion_tokens: int


class UsageLog:
    """A UsageSink that remembers each call: for tests that drive LLM code without the engine."""

    def __init__(self) -> None:
        self.calls: list[UsageCall] = []

    async def __call__(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls.append(
            UsageCall(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        )


@asynccontextmanager
async def fake_openai_server() -> AsyncIterator[FakeOpenAI]:
    """Serve a FakeOpenAI on 127.0.0.1 (a free port) for the duration of the block."""
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    # A client that gives up (timeout, cancelled run) cancels its handler, so a responder held on
    # an event never outlives the test; shutdown does not wait long for stragglers.
    async with serve_locally(app, shutdown_timeout=2.0, handler_cancellation=True) as origin:
        fake.base_url = f"{origin}/v1"
        yield fake


@pytest_asyncio.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A running fake OpenAI server; its `base_url` and `api_key` configure a client."""
    async with fake_openai_server() as server:
        yield server
