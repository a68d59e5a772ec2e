"""Any OpenAI-compatible chat-completions endpoint: a vLLM server, a hosted API.

Requests stream: up to `max_in_flight` sequences (requests x n) are outstanding at once, and each one that
completes is handed back and replaced by the next, so a slow request never holds the others up. They go through
one `AsyncOpenAI` client on one event loop for the backend's life, in a thread of its own: no new client, SSL
context or connection pool per call. The client's own retries
(`max_retries`, exponential backoff, `Retry-After` honoured) cover what is transient: connection errors,
timeouts, 408/409/429 and 5xx. What is left after the retries is sorted by `classify`:
- this request's fault (400/413/422, a 5xx or a timeout that persisted, a body that is not a chat completion)
  → a `RequestError` in its place: only its rows are marked;
- the service's fault (refused connections, 401/403, 404 for the model, 429 past the retries) → `ServiceError`:
  the stage records what came back, stops, and makes no further call.
The API key is read from the environment variable named by `api_key_env` and never stored; credentials written
into `base_url` are masked (`sgpo_data.redaction`) in every message and row error text.

With a vLLM server (`vllm_extensions=True`) the backend also asks for the generated token ids
(`return_tokens_as_token_ids`), constrains judge answers by guided choice and group replies by a regular
expression (`structured_outputs`), and continues a partial assistant turn (`continue_final_message`).
Log-probs are what the server reports; start vLLM with `--logprobs-mode processed_logprobs` so they are
taken after temperature scaling, the convention the trainer uses (with top_p < 1 vLLM also renormalises
over the kept tokens, which the trainer does not).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sgpo_data.backends.base import BACKENDS, Backend, Choice, Completion, Feed, Generation, Request, Result
from sgpo_data.backends.chat import continues
from sgpo_data.config import operational
from sgpo_data.errors import SgpoError, ServiceError
from sgpo_data.outcomes import ErrorKind, RequestError
from sgpo_data.redaction import redact_url


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="the server, e.g. http://127.0.0.1:8000/v1; None: api.openai.com")
    api_key_env: str = operational("OPENAI_API_KEY", description="environment variable holding the API key")
    timeout_s: float = operational(300.0, gt=0, description="seconds one attempt of a request may take")
    max_retries: int = operational(3, ge=0, description="retries of a transient failure, with backoff")
    vllm_extensions: bool = Field(True, description="the server is vLLM: token ids and guided choice")

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        """`base_url` is an http(s) URL.

        Without a scheme every request would fail, after the retries, as a service that cannot be reached."""
        if url is not None and not re.match(r"https?://[^/\s]", url):
            raise ValueError(f"{redact_url(url)!r} is not an http(s) URL; write it as http://HOST:PORT/v1")
        return url


class OpenAIBackend(Backend):
    def __init__(self, model: str | None, options: OpenAIOptions | None = None):
        options = options or OpenAIOptions()
        if not model:
            raise SgpoError("the openai backend needs a model name (generate.model / judge.model), as the server serves it")
        self.model_name, self.options = model, options
        self.server = redact_url(options.base_url or "https://api.openai.com/v1")  # for messages only
        self.api_key = os.environ.get(options.api_key_env) or ("EMPTY" if options.base_url else None)
        if self.api_key is None:
            raise SgpoError(f"no API key: set ${options.api_key_env}, or set a base_url for a local server that needs none")
        self.vllm_extensions = self.supports_choice = self.supports_pattern = options.vllm_extensions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self.clients_made = 0  # one per backend life (a test checks it)

    def _start(self) -> None:
        """The event loop thread and the client, made at the first call."""
        from openai import AsyncOpenAI

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True).start()
        self._client = AsyncOpenAI(base_url=self.options.base_url, api_key=self.api_key,
                                   timeout=self.options.timeout_s, max_retries=self.options.max_retries)
        self.clients_made += 1

    def stream(self, feed: Feed, max_in_flight: int) -> Iterator[tuple[Request, Result]]:
        if self._loop is None:
            self._start()
        done: queue.SimpleQueue = queue.SimpleQueue()
        feed.on_stop(lambda: done.put(None))  # SimpleQueue.put is reentrant: safe from a signal handler
        pending: set = set()
        in_flight = 0
        while True:
            while (request := feed.pop(None if in_flight == 0 else max_in_flight - in_flight)) is not None:
                future = asyncio.run_coroutine_threadsafe(self._one(request), self._loop)
                future.add_done_callback(lambda f, r=request: done.put((r, f)))
                pending.add(future)
                in_flight += request.sequences
            if in_flight == 0:
                return
            try:
                item = done.get(timeout=feed.patience())
            except queue.Empty:  # the feed was stopped and its grace is over: what is still out is dropped
                for future in pending:
                    future.cancel()
                return
            if item is None:  # woken by the feed's stop: wait again, now with its deadline
                continue
            request, future = item
            pending.discard(future)
            in_flight -= request.sequences
            yield request, future.result()

    async def _one(self, request: Request) -> Result:
        if request.choices is not None:
            return self._choice(request, await self._send({
                "messages": request.conversation, "temperature": 0.0,
                "max_tokens": max(len(o) for o in request.choices) + 8,
                "extra_body": {"structured_outputs": {"choice": request.choices}}}))
        params = request.params
        extra = {"return_tokens_as_token_ids": True} if self.vllm_extensions else {}
        if self.vllm_extensions and continues(request.conversation):  # continue the partial assistant turn
            extra |= {"continue_final_message": True, "add_generation_prompt": False}
        if self.vllm_extensions and request.pattern is not None:
            extra["structured_outputs"] = {"regex": request.pattern}
        response = await self._send({
            "messages": request.conversation, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_new_tokens, "seed": request.seed, "logprobs": True, "extra_body": extra})
        if isinstance(response, (RequestError, ServiceError)):
            return response
        try:
            return Generation([self._completion(choice) for choice in response.choices], _prompt_tokens(response))
        except Exception as exc:
            return RequestError(ErrorKind.INVALID_RESPONSE, f"malformed choice: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = self._client = None

    async def _send(self, request: dict):
        try:
            raw = await self._client.chat.completions.with_raw_response.create(model=self.model_name, **request)
        except Exception as exc:  # sorted into this request's fault or the service's
            return classify(exc, self.server, self.options)
        body = raw.http_response.text
        try:
            completion = raw.parse()
            if not isinstance(getattr(completion, "choices", None), list):
                raise ValueError("no choices")
            return completion
        except Exception as exc:  # HTML, a truncated body, JSON that is not a chat completion
            return RequestError(ErrorKind.INVALID_RESPONSE, redact_url(
                f"not a chat completion ({type(exc).__name__}: {exc}); body: {body!r}"))  # a proxy may echo the URL

    def _completion(self, choice) -> Completion:
        if choice.message is None:
            raise ValueError("a choice without a message")
        content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
        ids = None
        if content and self.vllm_extensions and all(t.token.startswith("token_id:") for t in content):
            ids = [int(t.token.split(":", 1)[1]) for t in content]
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            num_tokens=len(content) if content else 0,
            logprobs=[float(t.logprob) for t in content] if content else None,
            token_ids=ids,
        )

    def _choice(self, request: Request, response) -> Result:
        """vLLM's guided choice: the server can only produce one of the options."""
        if isinstance(response, (RequestError, ServiceError)):
            return response
        answer = (response.choices[0].message.content or "").strip() if response.choices else None
        if answer not in request.choices:
            return RequestError(ErrorKind.INVALID_RESPONSE, f"answer {answer!r} outside the allowed choices; is it a "
                                "vLLM server (guided choice)? set judge.backend.options.vllm_extensions: false otherwise")
        usage = response.usage
        return Choice(request.choices.index(answer), _prompt_tokens(response), usage.completion_tokens if usage else 0)


def _prompt_tokens(response) -> int:
    return response.usage.prompt_tokens if response.usage else 0


def classify(exc: Exception, server: str, options: OpenAIOptions) -> RequestError | ServiceError:
    """What an exception left after the client's retries means: this request's fault, or the service's; its
    message with URL credentials masked (the client's own messages may hold the URL)."""
    outcome = _classify(exc, redact_url(server), options)
    if isinstance(outcome, RequestError):
        return RequestError(outcome.kind, redact_url(outcome.message))
    return ServiceError(redact_url(str(outcome)))


def _classify(exc: Exception, server: str, options: OpenAIOptions) -> RequestError | ServiceError:
    import openai

    first_line = (str(getattr(exc, "message", "") or exc).splitlines() or [""])[0][:300]
    status = getattr(exc, "status_code", None)
    tries = f"after {options.max_retries} retries"
    if isinstance(exc, openai.APITimeoutError):
        return RequestError(ErrorKind.TIMEOUT, f"no answer within timeout_s={options.timeout_s} {tries}")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ServiceError(f"cannot reach {server} {tries}: {type(cause).__name__}: {str(cause)[:200]}; "
                            "is the server running? rerun the same command once it is back")
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ServiceError(f"{server} refused the credentials ({status}): {first_line}; "
                            f"check ${options.api_key_env}")
    if isinstance(exc, openai.RateLimitError):
        return ServiceError(f"{server} rate-limited the requests (429) {tries}: {first_line}; "
                            "lower max_in_flight or raise max_retries, then rerun")
    if isinstance(exc, openai.NotFoundError):
        return ServiceError(f"{server} answered 404: {first_line}; check the model name and base_url")
    if isinstance(exc, openai.InternalServerError) or (status or 0) >= 500:
        return RequestError(ErrorKind.SERVER_ERROR, f"{status} {tries}: {first_line}")
    if isinstance(exc, openai.APIStatusError):
        return RequestError(ErrorKind.BAD_REQUEST, f"{status}: {first_line}")
    return RequestError(ErrorKind.INVALID_RESPONSE, f"{type(exc).__name__}: {first_line}")


@BACKENDS.register("openai", options=OpenAIOptions)
def _openai(model: str | None, options: OpenAIOptions) -> OpenAIBackend:
    """Any OpenAI-compatible server (a vLLM server, a hosted API), with many requests in flight."""
    return OpenAIBackend(model=model, options=options)
