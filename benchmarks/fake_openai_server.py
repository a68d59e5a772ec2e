"""A fake OpenAI-compatible chat-completions server whose answers take a seeded, heavy-tailed time: each
request sleeps for a lognormal latency (median `--median-s`, shape `--sigma`; sigma 1 puts the p99 at 10x the
median) drawn from a hash of its body, so the same request waits as long under every client. Policy requests
get n answers of `--tokens` tokens with logprobs; guided-choice requests get one of their choices.

    python benchmarks/fake_openai_server.py --port 8123 --median-s 0.5 --sigma 1.0

Standard library only (asyncio streams, HTTP/1.1 keep-alive), one process: run it apart from the client.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random


def latency(body: bytes, median_s: float, sigma: float) -> float:
    rng = random.Random(hashlib.sha256(body).digest())
    return median_s * math.exp(sigma * rng.gauss(0.0, 1.0))


def answer(request: dict, tokens: int, rng: random.Random) -> dict:
    n = request.get("n") or 1
    choice_list = (request.get("structured_outputs") or {}).get("choice")
    choices = []
    for i in range(1 if choice_list else n):
        if choice_list:
            text, count = rng.choice(choice_list), 1
        else:
            text = "\n\n".join(f"Step {k}: {rng.randint(1, 99)} + {rng.randint(1, 99)}." for k in range(3))
            text += f"\n\nThe answer is {rng.randint(1, 200)}."
            count = tokens
        content = [{"token": f"token_id:{rng.randint(3, 40000)}", "logprob": -rng.random(), "bytes": None,
                    "top_logprobs": []} for _ in range(count)]
        choices.append({"index": i, "finish_reason": "stop", "logprobs": None if choice_list else {"content": content},
                        "message": {"role": "assistant", "content": text}})
    completion = sum(1 if choice_list else tokens for _ in choices)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": request.get("model", "fake"),
            "choices": choices, "usage": {"prompt_tokens": 100, "completion_tokens": completion,
                                           "total_tokens": 100 + completion}}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
            length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length) if length else b""
            path = head.split(b" ", 2)[1]
            if path.endswith(b"/models"):
                payload = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
            else:
                await asyncio.sleep(latency(body, args.median_s, args.sigma))
                rng = random.Random(hashlib.sha256(body).digest() + b"answer")
                payload = json.dumps(answer(json.loads(body), args.tokens, rng)).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", args.port, backlog=1024)
    print(f"listening on http://127.0.0.1:{args.port}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--median-s", type=float, default=0.5)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per policy answer")
    asyncio.run(main(parser.parse_args()))
