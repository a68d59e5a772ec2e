"""A small OpenAI-compatible chat-completions server that injects faults, for testing clients against
failures a real server (vLLM, a hosted API, a proxy in front of either) can produce.

    with FaultServer() as server:
        server.faults.append(Fault("status", status=503, times=2))  # the first two requests get a 503
        ...  # point a client at server.base_url

Without `upstream` it synthesizes deterministic answers (policy solutions, judge verdicts, guided choices);
with `upstream` it forwards every request it does not fault to that server and returns its answer verbatim.
`latency_s` (with `latency_sigma`, a seeded lognormal latency drawn from each request's body) makes every answer
wait like a real server's decode. Standard library only.

The tests run it inside the test process (a thread per connection). The benchmarks run it as a process of its own,
apart from the client they time (`start_process`; `--port 0`: a free port; it prints the URL it listens on, then
serves until killed):

    python tests/fault_server.py --port 8123 --median-s 0.5 --sigma 1.0
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHAT_PATH = "/v1/chat/completions"
FAULT_KINDS = {"status", "truncated", "html", "slow", "fewer_choices", "drop"}
# Faults after which the client did not receive a parsable chat.completion, even with status 200.
MALFORMED = {"truncated", "html", "drop"}
# The request fields that identify "the same call" (retries of one request share a key).
KEY_FIELDS = ("messages", "n", "seed", "temperature", "top_p", "max_tokens", "structured_outputs", "guided_choice")
HTML_PAGE = b"<html><body>502 Bad Gateway</body></html>"


@dataclass
class Fault:
    kind: str  # one of FAULT_KINDS
    status: int = 500  # kind="status": the HTTP status sent, with a JSON error body
    retry_after: float | None = None  # kind="status": adds a Retry-After header (seconds)
    delay_s: float = 0.0  # kind="slow": sleep this long, then answer normally
    choices: int = 1  # kind="fewer_choices": answer with this many choices instead of n
    match: str | None = None  # only requests whose json.dumps(messages) contains this substring
    times: int | None = None  # apply to the first `times` matching requests only (None: forever)
    after: int = 0  # let the first `after` matching requests through untouched (an outage that starts mid-run)
    fired: int = 0  # how many times this fault was applied
    seen: int = 0  # matching requests seen

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")

    def applies(self, messages_json: str) -> bool:
        if self.match is not None and self.match not in messages_json:
            return False
        self.seen += 1
        return self.seen > self.after and (self.times is None or self.fired < self.times)


@dataclass
class Call:
    key: str  # request_key(body)
    body: dict  # the parsed request JSON
    status: int  # HTTP status sent; 0 for "drop" (and while a slow answer is still pending)
    fault: str | None  # kind of the fault applied, or None


def request_key(body: dict) -> str:
    """sha256 of the canonical JSON of the fields that identify a call."""
    fields = {name: body.get(name) for name in KEY_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def synthesize(body: dict, judge_answer: str | Callable[[str], str],
               policy_answer: Callable[[int], str] | None = None) -> dict:
    """A deterministic chat.completion for `body`, shaped exactly as the OpenAI API returns it. `judge_answer`
    answers judge prompts: a fixed text, or a function of the prompt's last user message. `policy_answer(k)`
    writes a policy answer from its seeded number k in 0..99 (default: one step, then "The answer is k.")."""
    messages = body.get("messages") or []
    # vLLM guided choice: "structured_outputs" (current) or "guided_choice" (older releases).
    options = (body.get("structured_outputs") or {}).get("choice") or body.get("guided_choice")
    last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    last_user = last_user if isinstance(last_user, str) else json.dumps(last_user)
    n = body.get("n") or 1
    answer = judge_answer(last_user) if callable(judge_answer) else judge_answer

    def content(index: int) -> str:
        if options:
            return answer if answer in options else options[0]
        if "first wrong step" in last_user or "<step_0>" in last_user:  # a judge prompt
            return answer
        # A policy request: seeded, and different for each choice.
        k = int(hashlib.sha256(json.dumps([messages, body.get("seed"), index]).encode()).hexdigest(), 16) % 100
        return policy_answer(k) if policy_answer else f"First, compute the total.\n\nThe answer is {k}."

    choices, completion_tokens = [], 0
    for index in range(n):
        text = content(index)
        words = text.split()
        completion_tokens += len(words)  # one "token" per whitespace-separated word
        logprobs = None
        if body.get("logprobs"):
            as_ids = body.get("return_tokens_as_token_ids")  # vLLM: tokens come back as "token_id:<id>"
            logprobs = {"content": [
                {"token": f"token_id:{zlib.crc32(w.encode()) % 1000}" if as_ids else w,
                 "logprob": -0.5, "bytes": None, "top_logprobs": []} for w in words]}
        choices.append({"index": index, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop", "logprobs": logprobs})
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive connection outlives stop().
    protocol_version = "HTTP/1.0"
    owner: FaultServer  # set on the per-server subclass

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.owner.upstream:
            self._send(*self.owner._forward(self.path, None, self.headers))
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self._send(404, _error(f"no route {self.path}", 404))

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != CHAT_PATH:
            if self.owner.upstream:
                return self._send(*self.owner._forward(self.path, raw, self.headers))
            return self._send(404, _error(f"no route {self.path}", 404))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send(400, _error("request body is not JSON", 400))
        call = Call(key=request_key(body), body=body, status=0, fault=None)
        owner = self.owner
        with owner._lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._answer(call, raw, body)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _answer(self, call: Call, raw: bytes, body: dict):
        fault = self.owner._arrive(call)
        kind = call.fault = fault.kind if fault else None

        if kind == "drop":  # write nothing: the socket is closed when the handler returns
            self.close_connection = True
            return
        if kind == "status":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            call.status = fault.status
            error = _error(f"injected fault: status {fault.status}", fault.status)
            return self._send(fault.status, error, headers=headers)
        if kind == "html":
            call.status = 200
            return self._send(200, HTML_PAGE, "text/html")
        if kind == "slow" and not self._wait(fault.delay_s):
            return
        if not self._wait(self.owner.latency(raw)):
            return

        if self.owner.upstream:
            status, payload, content_type = self.owner._forward(self.path, raw, self.headers)
        else:
            status, content_type = 200, "application/json"
            payload = json.dumps(synthesize(body, self.owner.judge_answer, self.owner.policy_answer)).encode()
        if kind == "fewer_choices" and status == 200:
            answer = json.loads(payload)
            answer["choices"] = answer["choices"][:fault.choices]
            payload = json.dumps(answer).encode()
        if kind == "truncated":
            # A well-formed HTTP response (Content-Length matches) whose JSON body stops halfway.
            payload = payload[:len(payload) // 2]
        call.status = status
        self._send(status, payload, content_type)

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds` before answering; False (and the connection dropped) if the server is stopped meanwhile: a
        stopped server answers nothing more, and a request meant to wait for ever does not outlive it."""
        if seconds > 0 and self.owner._stopped.wait(seconds):
            self.close_connection = True
            return False
        return True

    def _send(self, status: int, payload: bytes | dict, content_type="application/json", headers: dict | None = None):
        payload = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _error(message: str, status: int) -> dict:
    """An error body shaped like the OpenAI API's."""
    return {"error": {"message": message, "type": "injected_fault", "code": status}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many clients connect at once (a reward loop's whole batch, a benchmark's window)

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) leaves a broken pipe behind; not worth a traceback


class FaultServer:
    def __init__(self, upstream: str | None = None, judge_answer: str | Callable[[str], str] = "0",
                 latency_s: float = 0.0, policy_answer: Callable[[int], str] | None = None,
                 latency_sigma: float = 0.0):
        self.upstream = upstream.rstrip("/") if upstream else None
        self.judge_answer, self.policy_answer = judge_answer, policy_answer
        self.latency_s = latency_s  # every answer waits this long (a judge's decode time); the median with a sigma
        self.latency_sigma = latency_sigma  # > 0: lognormal latencies (see latency())
        self.in_flight = 0  # chat requests being answered now
        self.max_in_flight = 0  # the most ever answered at once
        self.faults: list[Fault] = []  # checked in order, first match wins
        self.log: list[Call] = []  # every POST /v1/chat/completions, in arrival order
        self.port = 0  # 0 until start() picks a free port; restart() reuses it
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._stopped = threading.Event()  # set by stop(): wakes the answers still waiting, which then drop

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def latency(self, body: bytes) -> float:
        """How long the answer to a request with this raw body waits: `latency_s`, or with `latency_sigma` > 0 a
        lognormal time of median `latency_s` drawn from a hash of the body, so the same request waits as long under
        every client (sigma 1 puts the p99 at 10x the median)."""
        if not self.latency_sigma:
            return self.latency_s
        rng = random.Random(hashlib.sha256(body).digest())
        return self.latency_s * math.exp(self.latency_sigma * rng.gauss(0.0, 1.0))

    def start(self) -> FaultServer:
        self._stopped.clear()
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = _Server(("127.0.0.1", self.port), handler)
        self.port = self._httpd.server_address[1]
        # A short poll interval makes stop() quick (shutdown() waits for the next poll).
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()  # waits for serve_forever to return
            self._httpd.server_close()  # closes the listening socket: new connections are refused
            self._httpd = None

    def restart(self) -> None:
        """Serve again on the same port (after stop(), or stop and start if running)."""
        self.stop()
        self.start()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def successes(self) -> Counter:
        """Request key -> number of 200 answers sent that parse as a chat.completion."""
        return Counter(c.key for c in self.log if c.status == 200 and c.fault not in MALFORMED)

    def requests(self) -> Counter:
        """Request key -> number of requests received."""
        return Counter(c.key for c in self.log)

    def _arrive(self, call: Call) -> Fault | None:
        """Log a call and pick the first fault that applies to it (under the lock: `fired` counts are exact)."""
        messages = json.dumps(call.body.get("messages"), ensure_ascii=False)
        with self._lock:
            self.log.append(call)
            fault = next((f for f in self.faults if f.applies(messages)), None)
            if fault:
                fault.fired += 1
        return fault

    def _forward(self, path: str, data: bytes | None, incoming) -> tuple[int, bytes, str]:
        """Send the request to upstream (same path below /v1); return its status, body and content type."""
        url = self.upstream + path.removeprefix("/v1")
        headers = {name: incoming[name] for name in ("Content-Type", "Authorization") if incoming[name]}
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:  # an error status from upstream, passed on verbatim
            return exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
        except OSError as exc:  # upstream unreachable
            return 502, json.dumps(_error(f"{self.upstream} unreachable: {exc}", 502)).encode(), "application/json"


def worded_answer(words: int) -> Callable[[int], str]:
    """A `policy_answer` of about `words` words: steps "Step i: k + i = ...", then "The answer is k."."""
    def answer(k: int) -> str:
        steps = [f"Step {i}: {k} + {i} = {k + i}." for i in range(max(1, (words - 4) // 7))]
        return "\n\n".join([*steps, f"The answer is {k}."])

    return answer


def start_process(*args: str) -> tuple[subprocess.Popen, str]:
    """This server in a process of its own, on a free port; `args` are its command line's (`main`), e.g. "--median-s",
    "0.5". Returns the process (terminate it when done) and the base URL it serves."""
    process = subprocess.Popen([sys.executable, __file__, "--port", "0", *args], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "listening on <url>" once the socket is bound
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the fault server did not start (exit code {process.wait()})")
    return process, line.split()[-1]


def main(argv: list[str] | None = None) -> None:
    """Serve on loopback until killed (the benchmarks' fake OpenAI server)."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible chat-completions server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8123, help="0: a free port (the printed URL names it)")
    parser.add_argument("--median-s", type=float, default=0.0, help="median seconds each answer waits")
    parser.add_argument("--sigma", type=float, default=0.0,
                        help="lognormal shape of the wait, drawn from a hash of the request (1: p99 = 10x the median)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="about this many words per policy answer (default: one step, then the answer)")
    parser.add_argument("--judge-answer", default="0", help="the answer to judge prompts and guided choices")
    parser.add_argument("--upstream", default=None, help="forward every request to this server instead")
    args = parser.parse_args(argv)
    server = FaultServer(args.upstream, args.judge_answer, args.median_s,
                         worded_answer(args.tokens) if args.tokens else None, args.sigma)
    server.port = args.port
    server.start()
    print(f"listening on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
