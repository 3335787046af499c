"""Error bodies of the API, their older variant, and the seeded dice that inject faults."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import httpx
from starlette.responses import Response

if TYPE_CHECKING:
    from .app import Emulator

RESET = object()  # the request fault that answers nothing at all

# (code -> error type) per the HTTP error table of STARMAGIC_API.md; ``not_found`` is what the
# CDN and unknown routes answer, which the table does not cover.
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "invalid_task_id": "invalid_request_error",
    "unauthorized": "authentication_error",
    "insufficient_quota": "insufficient_quota",
    "model_access_denied": "invalid_request_error",
    "permission_denied": "invalid_request_error",
    "task_not_found": "invalid_request_error",
    "not_found": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "rate_limit_exceeded": "rate_limit_error",
    "internal_error": "api_error",
}

# What the older envelope suggests, by HTTP status.
_SUGGESTIONS = {
    400: "check the request parameters and try again",
    401: "check your API key",
    402: "top up your credits",
    403: "use a model or task your key may access",
    404: "check the id; tasks and links expire",
    429: "retry after 60 seconds",
}

TASK_FAILURE_MESSAGES = {
    "content_policy_violation": "Your request was blocked by safety filters",
    "invalid_parameters": "The request parameters are invalid for this model",
    "image_processing_error": "A reference image could not be fetched or processed",
    "image_dimension_mismatch": "The mask must be a PNG with alpha and the same size as the image",
    "request_cancelled": "The request was cancelled",
    "resource_not_found": "A resource the task needs was not found",
    "generation_failed_no_content": "The model returned no image",
    "service_error": "The generation service failed",
    "generation_timeout": "The generation timed out",
    "resource_exhausted": "The generation service is out of capacity",
    "quota_exceeded": "The upstream quota is exceeded",
    "service_unavailable": "The generation service is unavailable",
    "unknown_error": "An unknown error occurred",
}

BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
UNAVAILABLE_TEXT = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"

# Unknown fields a tolerant client must ignore (the "extra fields" variant).
EXTRA_TOP = {"system_fingerprint": "fp_emulator", "region": "emu-1", "billing": {"mode": "prepaid"}}
EXTRA_NESTED = {"queue_position": 0, "trace": "emulated"}


def error_body(status: int, code: str, message: str, *, legacy: bool = False,
               param: str | None = None, extra: bool = False) -> dict:
    """The error envelope; the older variant has the HTTP status as an integer code."""
    error: dict = {"code": code, "message": message, "type": ERROR_TYPES.get(code, "api_error")}
    if legacy:
        error["code"] = status
        error["param"] = param
        error["fallback_suggestion"] = _SUGGESTIONS.get(status, "retry after 60 seconds")
    body: dict = {"error": error}
    if extra:
        error.update(EXTRA_NESTED)
        body.update(EXTRA_TOP)
    return body


class Dice:
    """Seeded random draws, one independent stream per kind of fault."""

    def __init__(self, seed: int):
        self._seed = seed
        self._streams: dict[str, random.Random] = {}

    def _stream(self, kind: str) -> random.Random:
        rng = self._streams.get(kind)
        if rng is None:
            rng = self._streams[kind] = random.Random(f"{self._seed}/{kind}")
        return rng

    def roll(self, kind: str, rate: float) -> bool:
        """True with probability ``rate`` (never at 0, always at 1)."""
        return self._stream(kind).random() < rate

    def choice(self, kind: str, options: Sequence[str]) -> str:
        return self._stream(kind).choice(list(options))


# What a hostile or broken server may put into text: clear the screen, retitle the window, ring.
ESCAPE_TEXT = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[31m"


def echo_headers_error(emulator: Emulator, headers: list[tuple[bytes, bytes]]) -> Response:
    """A 400 whose message repeats the request's headers, as some proxies and frameworks do."""
    echoed = "; ".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in headers)
    return emulator.error(400, "invalid_request", f"Request rejected; headers received: {echoed}")


async def drip(send, seconds: float):
    """A ``send`` that passes a response body on one byte every ``seconds``."""
    async def dripping(message) -> None:
        if message["type"] != "http.response.body" or not message.get("body"):
            await send(message)
            return
        body, more = message["body"], message.get("more_body", False)
        for i in range(len(body)):
            await send({"type": "http.response.body", "body": body[i:i + 1], "more_body": True})
            await anyio.sleep(seconds)
        await send({"type": "http.response.body", "body": b"", "more_body": more})

    return dripping


async def request_fault(emulator: Emulator, headers: list[tuple[bytes, bytes]] = ()) -> Response | object | None:
    """What to answer instead of an API request (RESET for nothing), after any delay; or None."""
    faults = emulator.config.faults
    roll = emulator._roll
    if roll("echo_headers", faults.rate_echo_headers):
        return echo_headers_error(emulator, list(headers))
    if roll("slow", faults.rate_slow):
        await anyio.sleep(faults.slow_seconds)
    if roll("reset", faults.rate_reset):
        return RESET
    if roll("502", faults.rate_502):
        return Response(BAD_GATEWAY_HTML, 502, media_type="text/html")
    if roll("503", faults.rate_503):
        return Response(UNAVAILABLE_TEXT, 503, media_type="text/plain")
    if roll("500", faults.rate_500):
        return emulator.error(500, "internal_error", "The server had an error processing your request")
    if roll("429_retry_after", faults.rate_429_retry_after):
        return emulator.error(429, "rate_limit_exceeded", "Too many requests; retry after the given delay",
                              headers={"Retry-After": "1"})
    if roll("429", faults.rate_429):
        return emulator.error(429, "rate_limit_exceeded", "Too many requests; slow down")
    return None


async def drop_connection(send) -> None:
    """Close the connection without an answer.

    Under uvicorn ``send`` belongs to the connection's request cycle, whose transport can be
    aborted; in-process there is no connection, so raise what a client sees when one drops.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    transport.abort()
    for _ in range(3):  # let the server see the disconnect before it looks for an answer
        await anyio.sleep(0)


_OVERFLOW = "\u0000overflow\u0000"  # stands for the number 1e400, which Python's json cannot write


def submit_answer(emulator: Emulator, body: dict) -> Response:
    """The answer to an accepted submission, with the usage and number faults applied."""
    faults = emulator.config.faults
    roll = emulator._roll
    usage = body.get("usage")
    if roll("usage_missing", faults.rate_usage_missing):
        body.pop("usage", None)
    elif isinstance(usage, dict):
        if roll("usage_nan", faults.rate_usage_nan):
            usage["credits_reserved"] = float("nan")
        elif roll("usage_negative", faults.rate_usage_negative):
            usage["credits_reserved"] = -(usage.get("credits_reserved") or 1.0)
        elif roll("usage_huge", faults.rate_usage_huge):
            usage["credits_reserved"] = _OVERFLOW
    if roll("progress_overflow", faults.rate_progress_overflow):
        body["progress"] = _OVERFLOW
    text = json.dumps(body, allow_nan=True).replace(json.dumps(_OVERFLOW), "1e400")
    return Response(text.encode(), media_type="application/json")
