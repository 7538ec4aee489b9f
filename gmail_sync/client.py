"""GmailClient: the Gmail API as the sync services need it, and nothing of Django's models.

Every call goes through `_call` (or `_batch` for batch requests): the mailbox's shared quota is
drawn first (gmail_sync.quota), then the request runs; 429, rate-limit 403 and 5xx answers and
network failures are retried with exponential backoff and jitter (Retry-After honoured, and a
429 pauses every worker of the mailbox), up to GMAIL_MAX_RETRIES; a 401 is refreshed and tried
once more by google-auth's AuthorizedHttp. messages.send is not idempotent: it is retried only
after a rate limit (nothing was sent then). What is left becomes one of the errors below, so the
services decide by kind, never by status code.

Batch requests hold at most GMAIL_BATCH_SIZE calls; the parts that fail are retried alone
(googleapiclient retries nothing inside a batch), and a part answered 404 is a message gone.
googleapiclient builds a batch's URI from the discovery document, not from `api_endpoint`, so
the batch URI is a setting of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import google_auth_httplib2
import httplib2
from django.conf import settings
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from .quota import UNITS, QuotaLimiter

logger = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.send",
)
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
NETWORK_ERRORS = (httplib2.HttpLib2Error, TransportError, socket.timeout, ssl.SSLError, OSError)


class GmailError(Exception):
    """A Gmail call that failed; `message` is readable by the account's owner."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class GmailAuthError(GmailError):
    """The refresh token was refused (revoked, expired) or the grant lacks a scope: nothing
    works until the user connects the account again."""


class GmailNotFound(GmailError):
    """The message (or label) does not exist (any more)."""


class GmailHistoryExpired(GmailError):
    """history.list answered 404: the start id is older than the history Gmail keeps."""


class GmailUnavailable(GmailError):
    """Rate limits, server errors or the network, still failing after the retries: later."""


class GmailRequestError(GmailError):
    """Gmail refused the request itself (400 and the like): retrying will not help."""


@dataclass(frozen=True)
class GmailConfig:
    client_id: str
    client_secret: str
    token_uri: str
    api_endpoint: str
    batch_uri: str
    ca_certs: str | None = None
    timeout: float = 30.0
    max_retries: int = 6
    retry_base: float = 1.0
    batch_size: int = 50

    @classmethod
    def from_settings(cls) -> GmailConfig:
        return cls(
            client_id=settings.GMAIL_CLIENT_ID,
            client_secret=settings.GMAIL_CLIENT_SECRET,
            token_uri=settings.GMAIL_TOKEN_URI,
            api_endpoint=settings.GMAIL_API_ENDPOINT,
            batch_uri=settings.GMAIL_BATCH_URI,
            ca_certs=settings.GMAIL_CA_CERTS,
            timeout=settings.GMAIL_TIMEOUT_SECONDS,
            max_retries=settings.GMAIL_MAX_RETRIES,
            retry_base=settings.GMAIL_RETRY_BASE_SECONDS,
            batch_size=max(1, min(100, settings.GMAIL_BATCH_SIZE)),
        )


@dataclass
class MessagePage:
    messages: list[dict[str, str]]  # {"id", "threadId"}
    next_page_token: str | None
    result_size_estimate: int


@dataclass
class HistoryPage:
    records: list[dict[str, Any]]
    next_page_token: str | None
    history_id: int


@dataclass
class BatchResult:
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> message resource
    gone: set[str] = field(default_factory=set)  # answered 404


@dataclass
class CallCounts:
    """What a client spent: HTTP requests (a batch is one) and quota units."""

    http_requests: int = 0
    units: int = 0
    retries: int = 0


# Access tokens per refresh token, kept in this process for their lifetime (an hour): a task
# does not pay a token refresh. Keyed by a hash; never logged, never leaves the process.
_tokens: dict[str, tuple[str, datetime | None]] = {}
_tokens_lock = threading.Lock()


def _token_key(refresh_token: str, client_id: str) -> str:
    return hashlib.sha256(f"{client_id}\0{refresh_token}".encode()).hexdigest()


def forget_access_token(refresh_token: str, client_id: str) -> None:
    with _tokens_lock:
        _tokens.pop(_token_key(refresh_token, client_id), None)


def decode_raw(value: str) -> bytes:
    """A message's `raw` (base64url, Gmail leaves the padding out)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def raw_as_base64(value: str) -> str | None:
    """A message's `raw` (base64url) as standard, padded base64, the same bytes' encoding,
    without decoding it (a sync hands mail on in base64: decoding and encoding it again was
    most of the work of making a payload item). None when VALUE is not clean base64url; then
    `decode_raw` reads it, as leniently as ever."""
    try:
        data = value.encode("ascii").rstrip(b"=")
    except UnicodeEncodeError:
        return None
    if len(data) % 4 == 1 or data.translate(None, _BASE64URL_ALPHABET):
        return None
    return (data.translate(_URL_TO_STANDARD) + b"=" * (-len(data) % 4)).decode("ascii")


def encode_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def message_internal_date(resource: dict[str, Any]) -> datetime | None:
    value = resource.get("internalDate")
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC) if value else None
    except (TypeError, ValueError, OverflowError):
        return None


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class GmailClient:
    """One mailbox's Gmail API, authorized by its refresh token. Not thread-safe (httplib2)."""

    def __init__(
        self,
        refresh_token: str,
        mailbox: str,
        *,
        config: GmailConfig | None = None,
        limiter: QuotaLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or GmailConfig.from_settings()
        self.mailbox = mailbox
        self.limiter = limiter or QuotaLimiter(mailbox)
        self.counts = CallCounts()
        self._sleep = sleep
        self._refresh_token = refresh_token
        self._key = _token_key(refresh_token, self.config.client_id)
        with _tokens_lock:
            token, expiry = _tokens.get(self._key, (None, None))
        self.credentials = Credentials(
            token=token,
            refresh_token=refresh_token,
            token_uri=self.config.token_uri,
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            scopes=list(SCOPES),
        )
        if expiry is not None:
            self.credentials.expiry = expiry
        self._http = google_auth_httplib2.AuthorizedHttp(
            self.credentials,
            http=httplib2.Http(ca_certs=self.config.ca_certs, timeout=self.config.timeout),
        )
        self.service = build(
            "gmail",
            "v1",
            http=self._http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": self.config.api_endpoint},
        )
        self.users = self.service.users()
        self.messages = self.users.messages()

    # Reads ---------------------------------------------------------------------------------

    def profile(self) -> dict[str, Any]:
        """{"emailAddress", "messagesTotal", "threadsTotal", "historyId"}."""
        return self._call("getProfile", self.users.getProfile(userId="me"))

    def labels(self) -> list[dict[str, Any]]:
        return self._call("labels.list", self.users.labels().list(userId="me")).get("labels", [])

    def list_messages(
        self,
        *,
        page_token: str | None = None,
        include_spam_trash: bool = False,
        label_ids: list[str] | None = None,
        q: str | None = None,
        max_results: int = 500,
    ) -> MessagePage:
        kwargs: dict[str, Any] = {"userId": "me", "maxResults": max_results}
        if page_token:
            kwargs["pageToken"] = page_token
        if include_spam_trash:
            kwargs["includeSpamTrash"] = True
        if label_ids:
            kwargs["labelIds"] = label_ids
        if q:
            kwargs["q"] = q
        answer = self._call("messages.list", self.messages.list(**kwargs))
        return MessagePage(
            messages=answer.get("messages", []),
            next_page_token=answer.get("nextPageToken"),
            result_size_estimate=int(answer.get("resultSizeEstimate", 0)),
        )

    def history_page(
        self,
        start_history_id: int,
        *,
        page_token: str | None = None,
        history_types: list[str] | None = None,
        max_results: int = 500,
    ) -> HistoryPage:
        """One page of changes after START_HISTORY_ID; raises GmailHistoryExpired (404)."""
        kwargs: dict[str, Any] = {
            "userId": "me",
            "startHistoryId": str(start_history_id),
            "maxResults": max_results,
        }
        if page_token:
            kwargs["pageToken"] = page_token
        if history_types:
            kwargs["historyTypes"] = history_types
        try:
            answer = self._call("history.list", self.users.history().list(**kwargs))
        except GmailNotFound as exc:
            raise GmailHistoryExpired(
                f"Gmail no longer keeps the changes after history id {start_history_id}",
                status=404,
            ) from exc
        return HistoryPage(
            records=answer.get("history", []),
            next_page_token=answer.get("nextPageToken"),
            history_id=int(answer["historyId"]),
        )

    def get_message(self, message_id: str, *, fmt: str = "raw") -> dict[str, Any]:
        return self._call("messages.get", self.messages.get(userId="me", id=message_id, format=fmt))

    def get_messages(self, ids: Iterable[str], *, fmt: str = "raw") -> BatchResult:
        """Many messages in batch requests of at most GMAIL_BATCH_SIZE; ids answered 404
        are in `gone`. Raises like `_call` when a part still fails after its retries."""
        wanted = list(dict.fromkeys(ids))
        result = BatchResult()
        for chunk in chunks(wanted, self.config.batch_size):
            self._batch(
                "messages.get",
                {mid: self.messages.get(userId="me", id=mid, format=fmt) for mid in chunk},
                result,
            )
        return result

    # Writes --------------------------------------------------------------------------------

    def modify(self, message_id: str, *, add: list[str] = (), remove: list[str] = ()) -> dict:  # type: ignore[assignment]
        body = {"addLabelIds": list(add), "removeLabelIds": list(remove)}
        return self._call(
            "messages.modify", self.messages.modify(userId="me", id=message_id, body=body)
        )

    def batch_modify(
        self,
        ids: list[str],
        *,
        add: list[str] = (),  # type: ignore[assignment]
        remove: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        """batchModify takes at most 1,000 ids per call."""
        for start in range(0, len(ids), 1000):
            body = {
                "ids": ids[start : start + 1000],
                "addLabelIds": list(add),
                "removeLabelIds": list(remove),
            }
            self._call("messages.batchModify", self.messages.batchModify(userId="me", body=body))

    def trash(self, message_id: str) -> dict:
        return self._call("messages.trash", self.messages.trash(userId="me", id=message_id))

    def untrash(self, message_id: str) -> dict:
        return self._call("messages.untrash", self.messages.untrash(userId="me", id=message_id))

    def send(self, raw: bytes, *, thread_id: str | None = None) -> dict:
        body: dict[str, Any] = {"raw": encode_raw(raw)}
        if thread_id:
            body["threadId"] = thread_id
        return self._call(
            "messages.send", self.messages.send(userId="me", body=body), idempotent=False
        )

    def watch(self, topic: str, *, label_ids: list[str] | None = None) -> dict:
        """{"historyId", "expiration" (ms since the epoch)}."""
        body: dict[str, Any] = {"topicName": topic}
        if label_ids:
            body["labelIds"] = label_ids
            body["labelFilterBehavior"] = "include"
        return self._call("watch", self.users.watch(userId="me", body=body))

    def stop(self) -> None:
        self._call("stop", self.users.stop(userId="me"))

    # Execution -----------------------------------------------------------------------------

    def _call(self, method: str, request: Any, *, idempotent: bool = True) -> Any:
        """Run REQUEST with retries. Not IDEMPOTENT (a send): only a rate limit is retried,
        which Gmail answers before doing anything; after a server error or a cut connection
        the call may have taken effect, and a second one would send the message twice."""
        attempt = 0
        while True:
            self.limiter.acquire(UNITS[method])
            self.counts.http_requests += 1
            self.counts.units += UNITS[method]
            try:
                answer = request.execute()
                self._keep_token()
                return answer if answer is not None else {}
            except HttpError as exc:
                error = _error_of(exc)
            except RefreshError as exc:
                raise self._refresh_refused(exc) from exc
            except NETWORK_ERRORS as exc:
                error = GmailUnavailable(f"Gmail could not be reached: {exc}")
            if not idempotent and not rate_limited(error):
                raise error
            attempt = self._after_failure(error, attempt)

    def _batch(self, method: str, requests: dict[str, Any], result: BatchResult) -> None:
        """Run REQUESTS (request id -> request) as batches; retry the failed parts alone."""
        pending = dict(requests)
        attempt = 0
        while pending:
            failures: dict[str, GmailError] = {}

            def collect(
                request_id: str,
                response: Any,
                exception: Exception | None,
                failures: dict[str, GmailError] = failures,
            ) -> None:
                if exception is None:
                    result.found[request_id] = response or {}
                    return
                error = (
                    _error_of(exception)
                    if isinstance(exception, HttpError)
                    else GmailUnavailable(str(exception))
                )
                if isinstance(error, GmailNotFound):
                    result.gone.add(request_id)
                else:
                    failures[request_id] = error

            batch = BatchHttpRequest(callback=collect, batch_uri=self.config.batch_uri)
            for request_id, request in pending.items():
                batch.add(request, request_id=request_id)
            self.limiter.acquire(UNITS[method] * len(pending))
            self.counts.http_requests += 1
            self.counts.units += UNITS[method] * len(pending)
            try:
                batch.execute(http=self._http)
                self._keep_token()
            except HttpError as exc:  # the batch request itself
                failures = dict.fromkeys(pending, _error_of(exc))
            except RefreshError as exc:
                raise self._refresh_refused(exc) from exc
            except NETWORK_ERRORS as exc:
                failures = dict.fromkeys(pending, GmailUnavailable(f"Gmail unreachable: {exc}"))
            pending = {rid: req for rid, req in pending.items() if rid in failures}
            if pending:
                attempt = self._after_failure(_worst(failures.values()), attempt)

    def _after_failure(self, error: GmailError, attempt: int) -> int:
        """Sleep before retrying ERROR, or raise it: the next attempt's number."""
        retryable = isinstance(error, GmailUnavailable)
        if not retryable or attempt >= self.config.max_retries:
            raise error
        delay = min(64.0, self.config.retry_base * 2**attempt) * random.uniform(0.5, 1.0)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            delay = max(delay, retry_after)
        if rate_limited(error):
            self.limiter.penalize(delay)
        logger.info(
            "gmail %s: %s (%s); retry %d in %.1f s",
            self.mailbox,
            error.status,
            error.reason or error.message,
            attempt + 1,
            delay,
        )
        self.counts.retries += 1
        self._sleep(delay)
        return attempt + 1

    def _refresh_refused(self, exc: RefreshError) -> GmailError:
        forget_access_token(self._refresh_token, self.config.client_id)
        text = str(exc)
        if "invalid_grant" in text or "invalid_client" in text or "unauthorized_client" in text:
            return GmailAuthError(
                "Google refused the account's authorization (revoked or expired): "
                "connect the account again",
                status=400,
                reason="invalid_grant" if "invalid_grant" in text else "invalid_client",
            )
        return GmailUnavailable(f"Google's token endpoint failed: {text}")

    def _keep_token(self) -> None:
        token = self.credentials.token
        if token:
            with _tokens_lock:
                _tokens[self._key] = (token, self.credentials.expiry)


def _error_of(exc: HttpError) -> GmailError:
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", ""
    try:
        body = json.loads(exc.content or b"{}")
        error = body.get("error") or {}
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        errors = error.get("errors") if isinstance(error, dict) else None
        if errors:
            reason = errors[0].get("reason", "")
        elif isinstance(error, dict):
            reason = error.get("status", "")
    except (ValueError, AttributeError, TypeError):
        message = (exc.content or b"")[:200].decode("utf-8", "replace")
    text = f"Gmail answered {status}: {message or reason or 'no detail'}"
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS) or status >= 500:
        error_obj: GmailError = GmailUnavailable(text, status=status, reason=reason)
        with contextlib.suppress(TypeError, ValueError):
            error_obj.retry_after = float(exc.resp.get("retry-after"))  # type: ignore[attr-defined]
        return error_obj
    if status == 401 or status == 403:
        return GmailAuthError(text, status=status, reason=reason)
    if status == 404:
        return GmailNotFound(text, status=status, reason=reason)
    return GmailRequestError(text, status=status, reason=reason)


def rate_limited(error: GmailError) -> bool:
    """Gmail refused the call for a rate limit: nothing was done, trying later is safe."""
    return error.status == 429 or error.reason in RATE_LIMIT_REASONS


def _worst(errors: Iterable[GmailError]) -> GmailError:
    """The error a batch's retry is decided on: one that is not retryable wins."""
    errors = list(errors)
    for error in errors:
        if not isinstance(error, GmailUnavailable):
            return error
    return errors[0]
