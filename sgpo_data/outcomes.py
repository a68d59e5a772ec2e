"""Per-request outcomes. Every LLM request ends with a result, a `RequestError` (its rows get status `error`
with the kind and text kept; the stage goes on) or a `ServiceError` (the service itself failed: the stage stops).

Row statuses never hide a failure: the stage's `*_status` column says `error`, `*_error_kind` one of
`ErrorKind`, and `*_error` the text (with the raw body when there was one)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_ERROR_TEXT = 2000  # characters of an error (and of the raw body inside it) kept in a row


class ErrorKind:
    BAD_REQUEST = "bad_request"  # the server refused this request (400, 413, 422: e.g. context length)
    SERVER_ERROR = "server_error"  # 5xx after the retries
    TIMEOUT = "timeout"  # no answer within timeout_s, after the retries
    INVALID_RESPONSE = "invalid_response"  # an answer that is not a chat completion, or fewer choices than n

    ALL = (BAD_REQUEST, SERVER_ERROR, TIMEOUT, INVALID_RESPONSE)


@dataclass(frozen=True)
class RequestError:
    kind: str  # ErrorKind
    message: str

    def __post_init__(self):
        if len(self.message) > MAX_ERROR_TEXT:
            object.__setattr__(self, "message", self.message[:MAX_ERROR_TEXT] + "…")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message}
