"""Errors in the JSON shape Google APIs answer with, and failures injected by a test."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error response: `{"error": {"code", "message", "errors": [...], "status"}}`."""

    def __init__(self, code: int, message: str, reason: str, domain: str = "global") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.details: list[dict] = []

    def body(self) -> dict:
        error = {
            "code": self.code,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            "status": _STATUS.get(self.code, "UNKNOWN"),
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def not_found() -> ApiError:
    return ApiError(404, "Requested entity was not found.", "notFound")


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "badRequest")


UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential."
)


def unauthenticated() -> ApiError:
    return ApiError(401, UNAUTHENTICATED_MESSAGE, "authError")


def not_implemented(method_id: str) -> ApiError:
    return ApiError(501, f"The local Gmail API does not implement {method_id}", "notImplemented")


@dataclass(frozen=True)
class Fault:
    code: int
    reason: str
    domain: str
    message: str

    def error(self) -> ApiError:
        return ApiError(self.code, self.message, self.reason, self.domain)


RATE_LIMIT = Fault(429, "rateLimitExceeded", "usageLimits", "Rate Limit Exceeded")
USER_RATE_LIMIT = Fault(403, "userRateLimitExceeded", "usageLimits", "User Rate Limit Exceeded")
BACKEND_ERROR = Fault(500, "backendError", "global", "Backend Error")
# An access token Google stopped accepting before its expiry (revoked, password changed): the
# server forgets the token the call carried, so only a refreshed one works again.
UNAUTHORIZED = Fault(401, "authError", "global", UNAUTHENTICATED_MESSAGE)


class Faults:
    """Failures the next API calls answer with, in order, and delays before the next calls'
    answers (each call of a batch counts)."""

    def __init__(self) -> None:
        self._pending: deque[Fault] = deque()
        self._delays: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._pending.extend([fault] * times)

    def add_delay(self, seconds: float, times: int) -> None:
        with self._lock:
            self._delays.extend([seconds] * times)

    def take(self) -> Fault | None:
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def take_delay(self) -> float:
        with self._lock:
            return self._delays.popleft() if self._delays else 0.0

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._delays.clear()
