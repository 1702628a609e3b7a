"""What both HTTP APIs of `dataprep serve` share: the request error and its OpenAI shape.

`RequestError` carries an HTTP status and the field at fault; NeMo's route answers it as
`{"error": "..."}`, the OpenAI routes as `openai_error` shapes it. `check_keys` refuses a body that
is not an object or has a field the route does not know; `MAX_SENTENCES` caps the prompts of one
request on both APIs.
"""

from typing import Any

MAX_SENTENCES = 128  # NeMo's limit, and ours for prompts x n of one completions request


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def openai_error(e: RequestError) -> dict:
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    return {"error": {"message": str(e), "type": kind, "param": e.param, "code": None}}


def check_keys(body: Any, allowed: set[str], route: str) -> dict:
    if not isinstance(body, dict):
        raise RequestError(f"the body of {route} must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r} for {route}; allowed: {sorted(allowed)}",
            param=unknown[0],
        )
    return body
