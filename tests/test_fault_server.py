"""tests/fault_server.py against the real `openai` client. The assertions on the client's reaction to each
fault double as documentation of that reaction (measured with openai 3.57.0, sync and async alike):

  fault                        openai client (max_retries=0)                       retried when max_retries > 0?
  200 text/html body           no exception: create() returns the page as a `str`   no
  200 truncated JSON body      json.JSONDecodeError (a ValueError, NOT an openai     no
                               exception: `except openai.APIError` misses it)
  dropped connection           openai.APIConnectionError (cause: RemoteProtocolError) yes
  slow beyond `timeout`        openai.APITimeoutError (a subclass of                 yes
                               APIConnectionError)
  429                          openai.RateLimitError                                 yes; waits Retry-After if
                                                                                    0 < it <= 120 s, gives up at
                                                                                    once if it is > 120 s
  500 / 503                    openai.InternalServerError (an APIStatusError)        yes
  400                          openai.BadRequestError (an APIStatusError)            no
"""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest

from tests.fault_server import Call, Fault, FaultServer, request_key, start_process

MESSAGES = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest.fixture
def server():
    with FaultServer(judge_answer="2") as s:
        yield s


def client(server: FaultServer, **kw) -> openai.OpenAI:
    kw = {"max_retries": 0, "timeout": 5.0, **kw}
    return openai.OpenAI(base_url=server.base_url, api_key="x", **kw)


def ask(server: FaultServer, messages=MESSAGES, client_kw: dict | None = None, **kw):
    return client(server, **(client_kw or {})).chat.completions.create(model="m", messages=messages, **kw)


def test_generate_returns_n_choices_with_token_id_logprobs(server):
    response = ask(server, n=3, seed=11, temperature=0.8, logprobs=True,
                   extra_body={"return_tokens_as_token_ids": True})
    assert response.object == "chat.completion" and response.model == "m"
    assert [c.index for c in response.choices] == [0, 1, 2]
    total = 0
    for choice in response.choices:
        assert choice.finish_reason == "stop" and choice.message.role == "assistant"
        assert choice.message.content.startswith("First, compute the total.\n\nThe answer is ")
        tokens = choice.logprobs.content
        assert len(tokens) == len(choice.message.content.split())
        assert all(t.token.startswith("token_id:") and int(t.token.split(":")[1]) >= 0 for t in tokens)
        assert all(t.logprob == -0.5 for t in tokens)
        total += len(tokens)
    assert response.usage.completion_tokens == total
    assert response.usage.total_tokens == response.usage.prompt_tokens + total
    # Deterministic: the same request gives the same answers, another seed other ones.
    again = ask(server, n=3, seed=11, temperature=0.8)
    assert [c.message.content for c in again.choices] == [c.message.content for c in response.choices]
    assert again.choices[0].logprobs is None  # not asked for
    other = ask(server, n=3, seed=12)
    assert [c.message.content for c in other.choices] != [c.message.content for c in response.choices]


def test_logprob_tokens_are_words_without_token_ids(server):
    choice = ask(server, logprobs=True).choices[0]
    assert [t.token for t in choice.logprobs.content] == choice.message.content.split()


def test_guided_choice_and_judge_prompts(server):
    guided = {"structured_outputs": {"choice": ["0", "1", "2"]}}
    assert ask(server, extra_body=guided).choices[0].message.content == "2"  # the judge_answer, allowed
    with FaultServer(judge_answer="7") as other:  # not allowed: the first option
        assert ask(other, extra_body=guided).choices[0].message.content == "0"
    judge = [{"role": "user", "content": "<step_0>...</step_0> Which is the first wrong step?"}]
    assert ask(server, messages=judge).choices[0].message.content == "2"


def test_models_endpoint(server):
    assert [m.id for m in client(server).models.list()] == ["fake"]


@pytest.mark.parametrize("status, error", [(400, openai.BadRequestError), (500, openai.InternalServerError),
                                           (503, openai.InternalServerError), (429, openai.RateLimitError)])
def test_status_fault_raises_the_matching_openai_error(server, status, error):
    server.faults.append(Fault("status", status=status))
    with pytest.raises(error) as raised:
        ask(server)
    assert raised.value.status_code == status
    assert raised.value.body == {"message": f"injected fault: status {status}", "type": "injected_fault",
                                 "code": status}
    assert [(c.status, c.fault) for c in server.log] == [(status, "status")]


def test_retry_after_header_is_sent_and_honoured(server, monkeypatch):
    server.faults.append(Fault("status", status=429, retry_after=1.5))
    with pytest.raises(openai.RateLimitError) as raised:
        ask(server)
    assert raised.value.response.headers["retry-after"] == "1.5"
    # With retries the client waits Retry-After (not its own 0.5 s backoff), then succeeds. The wait the client
    # asks for is recorded (and skipped), not timed.
    waits, caller, sleep = [], threading.current_thread(), time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: waits.append(s) if threading.current_thread() is caller else sleep(s))
    server.faults[:] = [Fault("status", status=429, retry_after=0.8, times=1)]
    ask(server, client_kw={"max_retries": 1})
    assert waits == [0.8]
    assert [c.status for c in server.log[1:]] == [429, 200]


def test_html_page_comes_back_as_a_string(server):
    # The client returns non-JSON content as text instead of raising: callers then fail on `.choices`.
    server.faults.append(Fault("html"))
    assert ask(server, client_kw={"max_retries": 2}) == "<html><body>502 Bad Gateway</body></html>"
    assert len(server.log) == 1  # not retried
    assert not server.successes()


def test_truncated_json_raises_a_plain_json_error(server):
    server.faults.append(Fault("truncated"))
    with pytest.raises(json.JSONDecodeError):  # not an openai.APIError, and not retried
        ask(server, client_kw={"max_retries": 2})
    assert [(c.status, c.fault) for c in server.log] == [(200, "truncated")]
    assert not server.successes()


def test_dropped_connection_is_a_connection_error_and_retried(server):
    server.faults.append(Fault("drop", times=1))
    with pytest.raises(openai.APIConnectionError):
        ask(server)
    server.faults[0].times = 2
    ask(server, client_kw={"max_retries": 1})  # dropped once more, then answered
    assert [(c.status, c.fault) for c in server.log] == [(0, "drop"), (0, "drop"), (200, None)]


def test_slow_answer_times_out_or_arrives(server):
    # No duration is measured: the first answer waits far past the client's timeout, the second well within it.
    server.faults += [Fault("slow", delay_s=3600, times=1), Fault("slow", delay_s=0.2)]
    with pytest.raises(openai.APITimeoutError):  # a subclass of APIConnectionError
        ask(server, client_kw={"timeout": 0.2})
    assert ask(server, client_kw={"timeout": 60.0}).choices[0].message.content
    assert [(c.fault, c.status) for c in server.log] == [("slow", 0), ("slow", 200)]  # the first is still waiting


def test_stopping_drops_the_answers_still_waiting(server):
    from concurrent.futures import ThreadPoolExecutor

    server.faults.append(Fault("slow", delay_s=3600))
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(ask, server, client_kw={"timeout": 60.0})
        while not server.log and not answer.done():  # until the request has arrived
            time.sleep(0.01)
        server.stop()
        with pytest.raises(openai.APIConnectionError) as raised:
            answer.result()
    assert not isinstance(raised.value, openai.APITimeoutError)  # dropped at stop(), not left to time out
    assert [(c.fault, c.status) for c in server.log] == [("slow", 0)]


def test_latency_is_seeded_by_the_request_body():
    fixed = FaultServer(latency_s=0.25)
    assert fixed.latency(b"a") == fixed.latency(b"b") == 0.25
    heavy = FaultServer(latency_s=0.5, latency_sigma=1.0)
    assert heavy.latency(b"a") == FaultServer(latency_s=0.5, latency_sigma=1.0).latency(b"a")  # every client alike
    waits = sorted(heavy.latency(str(i).encode()) for i in range(2001))
    assert waits[1000] == pytest.approx(0.5, rel=0.15)  # the median
    assert waits[-20] / waits[1000] == pytest.approx(10, rel=0.3)  # sigma 1: p99 about 10x the median


def test_fewer_choices(server):
    server.faults.append(Fault("fewer_choices", choices=1))
    assert len(ask(server, n=3).choices) == 1
    assert server.successes() == {request_key({"messages": MESSAGES, "n": 3}): 1}  # well-formed, so counted


def test_match_and_times_restrict_a_fault(server):
    poison = [{"role": "user", "content": "poison pill"}]
    server.faults += [Fault("status", status=500, match="poison", times=2), Fault("status", status=400, times=1)]
    with pytest.raises(openai.InternalServerError):  # both match; the first rule wins
        ask(server, messages=poison)
    with pytest.raises(openai.BadRequestError):  # only the second matches
        ask(server)
    assert ask(server).choices  # the second is used up
    with pytest.raises(openai.InternalServerError):
        ask(server, messages=poison)
    assert ask(server, messages=poison).choices  # the first is used up after 2
    assert [f.fired for f in server.faults] == [2, 1]
    assert [c.status for c in server.log] == [500, 400, 200, 500, 200]


def test_stop_refuses_connections_and_restart_serves_on_the_same_port(server):
    url, port = server.base_url, server.port
    server.stop()
    with pytest.raises(openai.APIConnectionError):
        ask(server)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.restart()
    assert server.base_url == url
    assert ask(server).choices


def test_proxy_forwards_to_upstream_verbatim(server):
    with FaultServer(upstream=server.base_url) as front:
        assert front.base_url != server.base_url
        direct = ask(server, n=2, seed=3, logprobs=True)
        proxied = ask(front, n=2, seed=3, logprobs=True)
        assert [c.model_dump() for c in proxied.choices] == [c.model_dump() for c in direct.choices]
        assert [m.id for m in client(front).models.list()] == ["fake"]
        # Faults of the front never reach upstream; faults of upstream come back verbatim.
        front.faults.append(Fault("status", status=503, times=1))
        server.faults.append(Fault("html", times=1))
        with pytest.raises(openai.InternalServerError):
            ask(front)
        assert ask(front) == "<html><body>502 Bad Gateway</body></html>"
        front.faults.append(Fault("fewer_choices", choices=1, times=1))  # applied to the upstream answer
        assert len(ask(front, n=2).choices) == 1
        assert [c.status for c in front.log] == [200, 503, 200, 200]
        assert [c.fault for c in server.log] == [None, None, "html", None]
    with pytest.raises(openai.InternalServerError):  # an unreachable upstream is a 502 from the front
        with FaultServer(upstream="http://127.0.0.1:9/v1") as orphan:
            ask(orphan)


def test_log_successes_and_requests_count_per_call(server):
    other = [{"role": "user", "content": "Name a color."}]
    server.faults.append(Fault("status", status=500, match="color", times=1))
    ask(server, seed=1)
    ask(server, seed=1)
    ask(server, messages=other, client_kw={"max_retries": 1})  # a 500, then retried
    a, b = request_key({"messages": MESSAGES, "seed": 1}), request_key({"messages": other})
    assert all(isinstance(c, Call) for c in server.log)
    assert [c.key for c in server.log] == [a, a, b, b]
    assert server.log[0].body["model"] == "m" and server.log[0].body["seed"] == 1
    assert server.requests() == {a: 2, b: 2}
    assert server.successes() == {a: 2, b: 1}
    # The key ignores what does not change the answer (model, logprobs) but not what does (seed, n, choices).
    assert request_key({"messages": MESSAGES, "model": "x", "logprobs": True}) == request_key({"messages": MESSAGES})
    assert request_key({"messages": MESSAGES, "seed": 2}) != a
    assert request_key({"messages": MESSAGES, "structured_outputs": {"choice": ["0"]}}) != \
        request_key({"messages": MESSAGES})


def test_unknown_fault_kind_is_rejected():
    with pytest.raises(ValueError):
        Fault("explode")


def test_concurrent_requests_are_all_logged_and_times_is_exact(server):
    from concurrent.futures import ThreadPoolExecutor

    server.faults.append(Fault("status", status=500, times=5))
    one = client(server)

    def call(seed):
        try:
            return one.chat.completions.create(model="m", messages=MESSAGES, seed=seed).choices[0].message.content
        except openai.InternalServerError:
            return None

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(24)))
    assert answers.count(None) == 5 and server.faults[0].fired == 5
    assert len(server.log) == 24 and sum(server.requests().values()) == 24 and len(server.successes()) == 19


@pytest.mark.slow  # a process of its own
def test_the_script_serves_from_a_process_of_its_own():
    """What the benchmarks start: `python tests/fault_server.py` on a free port, with latency and worded answers."""
    process, url = start_process("--median-s", "0.01", "--sigma", "0.5", "--tokens", "32")
    try:
        one = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=30.0)
        response = one.chat.completions.create(model="m", messages=MESSAGES, n=2, seed=1)
        assert [len(c.message.content.split()) for c in response.choices] == [32, 32]
        assert all(c.message.content.startswith("Step 0: ") for c in response.choices)
        assert [m.id for m in one.models.list()] == ["fake"]
    finally:
        process.terminate()
        process.wait()
