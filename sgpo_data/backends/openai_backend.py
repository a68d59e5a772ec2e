"""Any OpenAI-compatible chat-completions endpoint: a vLLM server, a hosted API.

Requests run concurrently (up to `max_concurrency` in flight) with the `openai` client, whose own retries
cover only what is transient (connection errors, timeouts, 429, 5xx) with exponential backoff. The API key
is read from the environment variable named by `api_key_env` and never stored.

With a vLLM server (`vllm_extensions=True`) the backend also asks for the generated token ids
(`return_tokens_as_token_ids`) and constrains judge answers by guided choice (`structured_outputs`).
Log-probs are what the server reports; start vLLM with `--logprobs-mode processed_logprobs` so they are
taken after temperature scaling, the convention the trainer uses (with top_p < 1 vLLM also renormalises
over the kept tokens, which the trainer does not).
"""

from __future__ import annotations

import asyncio
import os

from sgpo_data.backends.base import Backend, Completion, Conversation, SamplingParams
from sgpo_data.errors import SgpoError


class OpenAIBackend(Backend):
    def __init__(self, model: str | None = None, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 32, timeout_s: float = 600.0, max_retries: int = 5,
                 vllm_extensions: bool = True, **_):
        if not model:
            raise SgpoError("the openai backend needs a model name (generate.model / judge.model), as the server serves it")
        self.model_name = model
        self.base_url = base_url
        self.api_key = os.environ.get(api_key_env) or ("EMPTY" if base_url else None)
        if self.api_key is None:
            raise SgpoError(f"no API key: set ${api_key_env}, or set a base_url for a local server that needs none")
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.vllm_extensions = vllm_extensions
        self.supports_choice = vllm_extensions

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s,
                           max_retries=self.max_retries)

    def _run(self, requests: list[dict]) -> list:
        async def run_all():
            client = self._client()
            gate = asyncio.Semaphore(self.max_concurrency)

            async def one(request):
                async with gate:
                    return await client.chat.completions.create(model=self.model_name, **request)

            try:
                return await asyncio.gather(*(one(r) for r in requests))
            finally:
                await client.close()

        from openai import APIConnectionError, APIStatusError

        try:
            return asyncio.run(run_all())
        except APIConnectionError as exc:
            raise SgpoError(f"cannot reach {self.base_url or 'the OpenAI API'}: {exc}; is the server running?") from None
        except APIStatusError as exc:
            raise SgpoError(f"{self.base_url or 'the OpenAI API'} refused the request ({exc.status_code}): "
                            f"{str(exc.message).splitlines()[0]}") from None

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Completion]]:
        extra = {"return_tokens_as_token_ids": True} if self.vllm_extensions else {}
        requests = [
            {"messages": c, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
             "max_tokens": params.max_new_tokens, "seed": params.seed + i, "logprobs": True, "extra_body": extra}
            for i, c in enumerate(conversations)
        ]
        return [[self._completion(choice) for choice in response.choices] for response in self._run(requests)]

    def _completion(self, choice) -> Completion:
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

    def choose(self, conversations: list[Conversation], choices: list[list[str]]) -> list[int]:
        """vLLM's guided choice: the server can only produce one of the options."""
        if not self.vllm_extensions:
            return super().choose(conversations, choices)
        requests = [
            {"messages": c, "temperature": 0.0, "max_tokens": max(len(o) for o in options) + 8,
             "extra_body": {"structured_outputs": {"choice": options}}}
            for c, options in zip(conversations, choices)
        ]
        picks = []
        for response, options in zip(self._run(requests), choices):
            answer = (response.choices[0].message.content or "").strip()
            if answer not in options:
                raise SgpoError(f"the server answered {answer!r} outside the allowed choices; "
                                "is it a vLLM server (guided choice)? set vllm_extensions: false otherwise")
            picks.append(options.index(answer))
        return picks
