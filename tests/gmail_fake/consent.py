"""Google's authorization endpoint: what the consent screen does, driven by a test.

A real user reads the consent screen, picks scopes and is sent back to the redirect_uri with
`code` and `state` (or `error=access_denied`). Here the test is the user:
`gmail_server.consent(authorization_url, "alice@gmail.com")` returns that redirect URL. What
Google checks before it shows the screen is checked here: a known client_id, response_type
code, a redirect_uri, Gmail scopes only, and (this fake insists, as the platform always sends
it) a PKCE code_challenge with method S256. A request Google would refuse without sending the
user back raises ConsentRefused (Google shows its own error page then).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from tests.gmail_fake.auth import Tokens

GMAIL_SCOPES = frozenset(
    f"https://www.googleapis.com/auth/gmail.{name}"
    for name in ("modify", "send", "readonly", "compose", "insert", "labels", "metadata")
) | {"https://mail.google.com/"}
# RFC 7636: 43 characters of base64url without padding for an S256 challenge.
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class ConsentRefused(Exception):
    """Google's error page (400: invalid_request, invalid_client, invalid_scope, ...)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error


def consent(
    tokens: Tokens,
    users: Iterable[str],
    auth_uri: str,
    authorization_url: str,
    email: str,
    *,
    granted: Iterable[str] | None = None,
    deny: bool = False,
) -> str:
    """The URL Google redirects the browser to after EMAIL answers the consent screen of
    AUTHORIZATION_URL: with `code` and `state`, or `error=access_denied` when DENY. GRANTED:
    the scopes the user left ticked (default: all requested)."""
    url = urllib.parse.urlsplit(authorization_url)
    if f"{url.scheme}://{url.netloc}{url.path}" != auth_uri:
        raise ConsentRefused("invalid_request", f"not this server's authorization endpoint: {url}")
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
    if not tokens.knows_client(query.get("client_id", "")):
        raise ConsentRefused("invalid_client", "The OAuth client was not found.")
    redirect_uri = query.get("redirect_uri", "")
    if urllib.parse.urlsplit(redirect_uri).scheme not in ("http", "https"):
        raise ConsentRefused("invalid_request", "Missing or invalid redirect_uri.")
    if query.get("response_type") != "code":
        raise ConsentRefused("unsupported_response_type", "response_type must be code.")
    requested = query.get("scope", "").split()
    if not requested or not set(requested) <= GMAIL_SCOPES:
        raise ConsentRefused("invalid_scope", f"Unsupported scopes: {query.get('scope')!r}")
    challenge = query.get("code_challenge", "")
    if query.get("code_challenge_method") != "S256" or not _CHALLENGE.match(challenge):
        raise ConsentRefused("invalid_request", "A code_challenge with method S256 is required.")
    if email not in set(users):
        raise ConsentRefused("invalid_request", f"no Google account {email!r} here")
    answer = {"state": query["state"]} if "state" in query else {}
    if deny:
        answer = {"error": "access_denied", **answer}
    else:
        scopes = [s for s in requested if granted is None or s in set(granted)]
        code = tokens.issue_code(
            client_id=query["client_id"],
            redirect_uri=redirect_uri,
            email=email,
            scopes=scopes,
            code_challenge=challenge,
            offline=query.get("access_type") == "offline",
            prompt_consent="consent" in query.get("prompt", "").split(),
        )
        answer = {"code": code, "scope": " ".join(scopes), **answer}
    separator = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
    return redirect_uri + separator + urllib.parse.urlencode(answer)
