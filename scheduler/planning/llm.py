"""The LLM endpoint: a thin shell over `openai.AsyncOpenAI` (Chat Completions).

Works against OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp). Every call
reports its token usage to the caller's UsageSink; every failure becomes a TaskError that says
whether trying again may help, and never carries the API key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import SecretStr

from scheduler.dag.drafts import DraftSink
from scheduler.dag.executors import UsageSink
from scheduler.errors import TaskError
from scheduler.planning.messages import Message

OPENAI_URL = "https://api.openai.com/v1"
LOCAL_SERVER_KEY = "not-needed"
"""AsyncOpenAI insists on a key; local OpenAI-compatible servers usually ignore it."""
DEFAULT_MAX_RETRIES = 0
"""The SDK does not retry: the engine's retry policy is the one layer (see RetryPolicies)."""

# Status codes where another try may succeed (the SDK's own retry set: timeout, lock, rate, server).
_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Key-shaped strings, in case a server echoes a key back in an error message.
_KEY_PATTERN = re.compile(r"\b(sk|xox[a-z]|xapp)-[A-Za-z0-9_*\-]{6,}")


class LLMSettings(Protocol):
    """What the LLM needs from the configuration (bot.settings.Settings fits)."""

    @property
    def openai_api_key(self) -> SecretStr | None: ...
    @property
    def openai_base_url(self) -> str | None: ...
    @property
    def model(self) -> str: ...
    @property
    def llm_timeout(self) -> float: ...


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One answer. `content` is None when the model refused or said nothing."""

    content: str | None
    refusal: str | None
    finish_reason: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[str, ...] = ()
    """Tools the model called instead of answering (some servers offer tools regardless)."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class LLM:
    """One configured model behind one HTTP client; create once, share, `aclose()` at the end."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.model = model
        self.base_url = base_url or OPENAI_URL
        self.timeout = timeout
        # Against OpenAI itself a missing key is a configuration error, reported on first use so
        # that commands which never call the model (listing runs) still work.
        self._missing_key = not api_key and base_url is None
        self._secrets = tuple(s for s in (api_key,) if s)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or LOCAL_SERVER_KEY,
            base_url=self.base_url,
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=max_retries,
        )

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> LLM:
        """Build from OPENAI_API_KEY, OPENAI_BASE_URL, DAGBOT_MODEL and DAGBOT_LLM_TIMEOUT."""
        key = settings.openai_api_key
        return cls(
            model=settings.model,
            api_key=key.get_secret_value() if key is not None else None,
            base_url=settings.openai_base_url or None,
            timeout=settings.llm_timeout,
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _check_key(self) -> None:
        if self._missing_key:
            raise TaskError(
                "OPENAI_API_KEY is not set: set it to use OpenAI, or set OPENAI_BASE_URL to use "
                "an OpenAI-compatible server.",
                retryable=False,
            )

    async def complete_text(self, messages: Sequence[Message], *, usage: UsageSink) -> Completion:
        """A plain-text completion."""
        return await self._complete(messages, usage=usage, response_format=None)

    async def stream_text(
        self, messages: Sequence[Message], *, usage: UsageSink, on_text: DraftSink
    ) -> Completion:
        """A plain-text completion, streamed: `on_text` gets each piece of content as it comes.

        The returned Completion is the whole answer, as `complete_text` would give it.
        """
        return await self._stream(messages, usage=usage, on_text=on_text, response_format=None)

    async def stream_structured(
        self,
        messages: Sequence[Message],
        *,
        name: str,
        schema: dict[str, Any],
        usage: UsageSink,
        on_text: DraftSink,
    ) -> Completion:
        """`complete_structured`, streamed: `on_text` gets each piece of the JSON as it comes."""
        return await self._stream(
            messages, usage=usage, on_text=on_text, response_format=_json_schema(name, schema)
        )

    async def _stream(
        self,
        messages: Sequence[Message],
        *,
        usage: UsageSink,
        on_text: DraftSink,
        response_format: ResponseFormatJSONSchema | None,
    ) -> Completion:
        self._check_key()
        content: list[str] = []
        refusal: list[str] = []
        finish_reason = "stop"
        model = self.model
        prompt_tokens = completion_tokens = 0
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=[_wire(m) for m in messages],
                stream=True,
                stream_options={"include_usage": True},
                response_format=response_format if response_format is not None else openai.omit,
            )
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices[:1]:
                        if choice.delta.content:
                            content.append(choice.delta.content)
                            on_text(choice.delta.content)
                        if choice.delta.refusal:
                            refusal.append(choice.delta.refusal)
                        if choice.finish_reason is not None:
                            finish_reason = str(choice.finish_reason)
        except openai.OpenAIError as error:
            raise task_error(
                error, timeout=self.timeout, base_url=self.base_url, secrets=self._secrets
            ) from None
        completion = Completion(
            content="".join(content) if content else None,
            refusal="".join(refusal) if refusal else None,
            finish_reason=finish_reason,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        await usage(completion.model, completion.prompt_tokens, completion.completion_tokens)
        return completion

    async def complete_structured(
        self,
        messages: Sequence[Message],
        *,
        name: str,
        schema: dict[str, Any],
        usage: UsageSink,
    ) -> Completion:
        """A completion constrained to `schema` (json_schema, strict); `content` is the JSON."""
        return await self._complete(
            messages, usage=usage, response_format=_json_schema(name, schema)
        )

    async def _complete(
        self,
        messages: Sequence[Message],
        *,
        usage: UsageSink,
        response_format: ResponseFormatJSONSchema | None,
    ) -> Completion:
        self._check_key()
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=[_wire(m) for m in messages],
                response_format=response_format if response_format is not None else openai.omit,
            )
        except openai.OpenAIError as error:
            raise task_error(
                error, timeout=self.timeout, base_url=self.base_url, secrets=self._secrets
            ) from None
        if not isinstance(response, ChatCompletion):
            # The SDK hands back the body as it came when it is not JSON (an HTML page from a
            # proxy, or a base URL that is a website rather than an API).
            raise TaskError(
                f"The language model at {public_url(self.base_url)} did not answer with a chat "
                f"completion (the answer began {_preview(response)!r}); check OPENAI_BASE_URL.",
                retryable=False,
            )
        completion = completion_from(response, model=self.model)
        await usage(completion.model, completion.prompt_tokens, completion.completion_tokens)
        return completion


def completion_from(response: ChatCompletion, *, model: str) -> Completion:
    """Our view of an SDK response; a response without choices reads as an empty answer."""
    prompt_tokens = response.usage.prompt_tokens if response.usage else 0
    completion_tokens = response.usage.completion_tokens if response.usage else 0
    if not response.choices:
        return Completion(
            content=None,
            refusal=None,
            finish_reason="stop",
            model=response.model or model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
    choice = response.choices[0]
    return Completion(
        content=choice.message.content,
        refusal=choice.message.refusal,
        finish_reason=str(choice.finish_reason),
        model=response.model or model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tool_calls=tool_call_names(choice.message),
    )


def tool_call_names(message: ChatCompletionMessage) -> tuple[str, ...]:
    """The tools a message calls: function and custom tool calls, and the legacy function_call."""
    names = [
        call.function.name if call.type == "function" else call.custom.name
        for call in message.tool_calls or ()
    ]
    if message.function_call is not None:
        names.append(message.function_call.name)
    return tuple(names)


def task_error(
    error: openai.OpenAIError,
    *,
    timeout: float,
    base_url: str,
    secrets: Sequence[str] = (),
) -> TaskError:
    """Translate an SDK error (after the SDK's own retries) into a TaskError for the engine.

    Timeouts, connection failures, 408/409/429 and 5xx may pass on their own: retryable.
    Anything else (400 bad request, 401 bad key, 403, 404 unknown model) will not.
    """
    if isinstance(error, openai.APITimeoutError):
        return TaskError(f"The language model did not answer within {timeout:g} s.", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return TaskError(
            f"Could not connect to the language model at {public_url(base_url)}.", retryable=True
        )
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        detail = redact(_server_message(error), secrets)
        retryable = status in _RETRYABLE_STATUS or status >= 500
        hint = _STATUS_HINTS.get(status, "")
        text = f"The language model answered HTTP {status}"
        text += f": {detail}" if detail else "."
        if hint:
            text += f" {hint}"
        return TaskError(text, retryable=retryable)
    return TaskError(
        f"The language model call failed: {redact(str(error), secrets)}", retryable=False
    )


_STATUS_HINTS = {
    401: "Check OPENAI_API_KEY.",
    403: "The API key may not have access to this model.",
    404: "Check DAGBOT_MODEL and OPENAI_BASE_URL.",
    429: "Rate limited or out of quota.",
}


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"]).strip()
        if isinstance(body.get("message"), str):
            return str(body["message"]).strip()
    if isinstance(body, str):
        return body.strip()[:500]
    return ""


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every given secret, and anything shaped like an API key, replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("***", text)


def public_url(url: str) -> str:
    """A URL without credentials or query string, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _preview(answer: object, limit: int = 60) -> str:
    text = " ".join(str(answer).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_schema(name: str, schema: dict[str, Any]) -> ResponseFormatJSONSchema:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _wire(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
