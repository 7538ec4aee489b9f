"""The SMTP sender of outbound messages (the `OutboundSender` of messages.outbox_delivery):
SMTP through smtp_sync.smtp_transport, the copy in the account's Sent folder over IMAP.

Envelope: from the account's address, to every recipient still pending (to, cc and bcc), with
ENVID = the message's envelope id, NOTIFY=FAILURE,DELAY (and SUCCESS when the message asks),
RET=HDRS.

How "found in Sent" and "absent from Sent" become proofs (the `unknown` resolution):
the copy is APPENDed to Sent (\\Seen, and the keyword SENDING_KEYWORD) *before* the SMTP
transaction, and the keyword is removed as soon as the server accepted the message. So, for a
message whose outcome was lost:
- no copy in Sent: the worker never reached the SMTP transaction -> absent, safe to send;
- a copy without the keyword: the server had accepted it -> sent;
- a copy with the keyword: the transaction may or may not have completed (a cut after DATA,
  or a crash between the server's answer and the keyword's removal) -> cannot tell; the
  delivery step never resends such a message (it fails it after a bounded time).
A Sent folder whose PERMANENTFLAGS allow no new keyword cannot carry that proof: a copy found
there is "cannot tell" (absence still proves the transaction never began).
A definite failure (refused, or 4xx: nothing was accepted) deletes the copy again. A retry for
recipients refused for now (the others got the message) reuses the copy: the keyword is put
back for the attempt and removed when the server answers, so a lost outcome of the retry is
"cannot tell", not "sent" to recipients that never got it. When the
copy cannot be written, nothing is sent (a transient failure): without it an unknown outcome
could not be resolved safely.

Accounts whose server files sent mail itself (Gmail's SMTP: `saveSentCopy` false, the default
for Gmail's hosts) get no APPEND: the server's own copy in Sent is the proof, and it appears
when the server accepts the message.

The copy is stored through the message pipeline as a sync would store it (its bytes fetched
back from the server, its folder and UID), so it shows in Sent and in the reply's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from django.utils import timezone

from messages.batches import BatchPublisher
from messages.folders import folders_by_name
from messages.models import Account, Folder, Message, OutboundMessage
from messages.outbox_delivery import (
    RecipientResult,
    SendAuthFailed,
    SendPermanent,
    SendTransient,
    SendUnknown,
)

from .imap import FetchedMessage, ImapAuthError, ImapConnection, ImapError, ImapServer
from .models import ImapSettings
from .pool import pooled_connection
from .smtp_transport import (
    SendOutcome,
    SmtpAuthError,
    SmtpEndpoint,
    SmtpError,
    SmtpOutcomeUnknown,
    SmtpPermanentError,
    SmtpSession,
    smtp_endpoint_for,
)
from .sync import fetched_item, server_for

logger = logging.getLogger(__name__)

SENDING_KEYWORD = "$OutboxSending"
SEEN = "\\Seen"
SELF_SAVING_HOSTS = ("gmail.com", "googlemail.com")

ConnectionFactory = Callable[[ImapServer], AbstractContextManager[ImapConnection]]


def saves_sent_copy(account: Account, settings: ImapSettings | None = None) -> bool:
    """Whether the platform APPENDs the sent copy (sync_settings `saveSentCopy`); by default
    not for servers known to file sent mail themselves (Gmail)."""
    stored = account.sync_settings if isinstance(account.sync_settings, dict) else {}
    if "saveSentCopy" in stored:
        return bool(stored["saveSentCopy"])
    if settings is None:
        try:
            settings = account.imap_settings
        except ImapSettings.DoesNotExist:
            settings = None
    host = (settings.smtp_host if settings else "").strip().lower().rstrip(".")
    return not any(host == h or host.endswith("." + h) for h in SELF_SAVING_HOSTS)


# The Sent folder's name per account, found once per process.
_sent_folders: dict[int, str] = {}


def _sent_folder(account: Account, conn: ImapConnection) -> str:
    """The account's Sent folder: SPECIAL-USE \\Sent, else the store's sent folder, else
    "Sent"."""
    name = _sent_folders.get(account.pk)
    if name is None:
        by_role = [f.name for f in conn.list_folders() if f.selectable and f.role == "sent"]
        stored = (
            Folder.objects.filter(account=account, role=Folder.Role.SENT)
            .values_list("name", flat=True)
            .first()
        )
        name = _sent_folders[account.pk] = (by_role or [stored or "Sent"])[0]
    return name


class _Sessions:
    """SMTP sessions kept per process between messages, one per endpoint (its settings and
    secrets), so that a burst of sends from an account goes over one connection. A session
    idle longer than IDLE_SECONDS is closed at the next checkout; one whose send raised is
    closed at once. Forked children start with none."""

    IDLE_SECONDS = 30.0

    def __init__(self) -> None:
        self._idle: dict[SmtpEndpoint, tuple[SmtpSession, float]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(
        self, endpoint: SmtpEndpoint, factory: Callable[[SmtpEndpoint], SmtpSession]
    ) -> Iterator[SmtpSession]:
        now = time.monotonic()
        with self._lock:
            kept = self._idle.pop(endpoint, None)
            stale = [k for k, (_, at) in self._idle.items() if now - at > self.IDLE_SECONDS]
            closing = [self._idle.pop(k)[0] for k in stale]
        if kept is not None and now - kept[1] > self.IDLE_SECONDS:
            closing.append(kept[0])
            kept = None
        for old in closing:
            old.close()
        session = kept[0] if kept is not None else factory(endpoint)
        try:
            yield session
        except BaseException:
            session.close()
            raise
        with self._lock:
            replaced = self._idle.get(endpoint)
            self._idle[endpoint] = (session, time.monotonic())
        if replaced is not None:
            replaced[0].close()

    def clear(self, *, close: bool = True) -> None:
        with self._lock:
            sessions, self._idle = [s for s, _ in self._idle.values()], {}
        if close:
            for session in sessions:
                session.close()


_sessions = _Sessions()
os.register_at_fork(after_in_child=lambda: _sessions.clear(close=False))


class SmtpOutboundSender:
    """Sends one account's outbound messages; see the module's docstring."""

    def __init__(
        self,
        account: Account,
        *,
        session_factory: Callable[[SmtpEndpoint], SmtpSession] = SmtpSession,
        connection_factory: ConnectionFactory = pooled_connection,
    ) -> None:
        self.account = account
        self.session_factory = session_factory
        self.connection_factory = connection_factory
        self.saves_copy = saves_sent_copy(account)
        self._copy: int | None = None  # UID of this attempt's copy in Sent
        self._appended = False  # appended by this attempt (else an earlier one's, reused)
        self._confirmed = False  # its keyword removed
        self._server: ImapServer | None = None

    # OutboundSender ---------------------------------------------------------------------------
    def send(self, outbound: OutboundMessage, recipients: list[str]) -> list[RecipientResult]:
        raw = bytes(outbound.raw)
        copy = self._copy_before_sending(outbound, raw) if self.saves_copy else None
        try:
            endpoint = smtp_endpoint_for(self.account)
            with _sessions.session(endpoint, self.session_factory) as session:
                outcome = session.send(
                    self.account.email_address,
                    recipients,
                    raw,
                    envid=outbound.envelope_id,
                    notify=("SUCCESS", "FAILURE", "DELAY")
                    if outbound.notify_success
                    else ("FAILURE", "DELAY"),
                    ret="HDRS",
                )
        except SmtpOutcomeUnknown as exc:  # the copy keeps its keyword: "cannot tell"
            raise SendUnknown(exc.message) from exc
        except SmtpError as exc:
            if copy is not None:
                self._forget_copy(outbound, copy)
            raise _send_error(exc) from exc
        results = _results(outcome)
        if copy is not None:
            if any(r.accepted for r in results):
                self.accepted(outbound, copy)
            else:
                self._forget_copy(outbound, copy)
        return results

    def find_sent(self, outbound: OutboundMessage) -> bool | None:
        try:
            with self._imap() as conn:
                folder = _sent_folder(self.account, conn)
                uids = conn.search_message_id(folder, outbound.message_id_header)
                if not uids:
                    return False
                flags = conn.fetch_flags(uids)
                keywords_kept = conn.select(folder, readonly=False).keeps_keyword(SENDING_KEYWORD)
        except ImapAuthError as exc:
            raise SendAuthFailed(str(exc)) from exc
        except ImapError as exc:
            logger.info("outbound %s: Sent cannot be searched now: %s", outbound.pk, exc)
            return None
        if self.saves_copy and not keywords_kept:
            return None  # a server that drops keywords: a copy proves nothing
        if any(SENDING_KEYWORD.lower() not in {f.lower() for f in f_} for f_ in flags.values()):
            return True
        return None  # copied before sending, never confirmed: may or may not have gone

    def after_sent(self, outbound: OutboundMessage, *, found: bool) -> Message | None:
        """Make sure Sent has the copy (\\Seen, no keyword) and store it; the stored one."""
        with self._imap() as conn:
            folder = _sent_folder(self.account, conn)
            if self._copy is not None:
                uid = self._copy
                status = conn.select(folder, readonly=False)
            else:
                uids = conn.search_message_id(folder, outbound.message_id_header)
                if not uids and self.saves_copy:
                    conn.append(folder, bytes(outbound.raw), [SEEN])
                    uids = conn.search_message_id(folder, outbound.message_id_header)
                if not uids:
                    return None
                uid = uids[0]
                conn.set_flags([uid], [SEEN], add=True)
                status = conn.select(folder, readonly=False)
            if not self._confirmed:
                conn.set_flags([uid], [SENDING_KEYWORD], add=False)
            fetched = conn.fetch_messages([uid], include_body=True)
        if not fetched:
            return None
        return self._store(outbound.message_id_header, folder, status.uidvalidity, fetched[0])

    # The copy in Sent ---------------------------------------------------------------------------
    def accepted(self, outbound: OutboundMessage, copy: int) -> None:
        """The server took the message: the copy loses its keyword (the proof it was sent)."""
        try:
            with self._imap() as conn:
                conn.select(_sent_folder(self.account, conn), readonly=False)
                conn.set_flags([copy], [SENDING_KEYWORD], add=False)
            self._confirmed = True
        except ImapError as exc:  # after_sent removes it again; until then "cannot tell"
            logger.warning("outbound %s: sent, its copy not confirmed yet: %s", outbound.pk, exc)

    def _copy_before_sending(self, outbound: OutboundMessage, raw: bytes) -> int:
        """The copy in Sent, with the keyword, before the SMTP transaction; its UID. A copy
        already there (an earlier attempt that reached some recipients) is reused."""
        try:
            with self._imap() as conn:
                folder = _sent_folder(self.account, conn)
                # Only an earlier attempt can have left a copy: the first one need not look.
                uids = (
                    conn.search_message_id(folder, outbound.message_id_header)
                    if outbound.attempts > 1
                    else []
                )
                if uids:  # this attempt is in flight again until the server answers
                    conn.set_flags(uids[:1], [SENDING_KEYWORD], add=True)
                else:
                    appended = conn.append(folder, raw, [SEEN, SENDING_KEYWORD])
                    self._appended = True
                    status = conn.select(folder, readonly=False)
                    if appended is not None and appended[0] == status.uidvalidity:
                        uids = [appended[1]]
                    else:
                        uids = conn.search_message_id(folder, outbound.message_id_header)
                if not uids:
                    raise ImapError(f"the copy appended to {folder} cannot be found")
                self._copy = uids[0]
                return uids[0]
        except ImapAuthError as exc:
            raise SendAuthFailed(f"the IMAP login was refused: {exc}") from exc
        except ImapError as exc:
            _sent_folders.pop(self.account.pk, None)
            raise SendTransient(
                f"the copy could not be saved in Sent, so nothing was sent yet: {exc}"
            ) from exc

    def _forget_copy(self, outbound: OutboundMessage, copy: int) -> None:
        """Nothing was accepted in this attempt: delete the copy it appended; a copy an
        earlier attempt sent to some recipients only loses the keyword again."""
        try:
            with self._imap() as conn:
                conn.select(_sent_folder(self.account, conn), readonly=False)
                if self._appended:
                    conn.delete([copy])
                else:
                    conn.set_flags([copy], [SENDING_KEYWORD], add=False)
        except ImapError as exc:
            logger.warning("outbound %s: its copy in Sent stays as it is: %s", outbound.pk, exc)

    @contextlib.contextmanager
    def _imap(self) -> Iterator[ImapConnection]:
        if self._server is None:
            self._server = server_for(self.account, self.account.imap_settings)
        with self.connection_factory(self._server) as conn:
            yield conn

    def _store(
        self, message_id: str, folder_name: str, uidvalidity: int, fetched: FetchedMessage
    ) -> Message | None:
        """Store the copy as a sync of the folder would (pipeline, same item)."""
        folder = folders_by_name(self.account, [folder_name])[folder_name]
        # Under a UIDVALIDITY the store does not know (its folder is stale), no UID: the
        # message is stored in the folder and the next sync gives it its UID.
        uid = fetched.uid if folder.uidvalidity in (None, uidvalidity) else None
        item = fetched_item(fetched, folder_name, uid=uid)
        publisher = BatchPublisher(self.account.pk, self.account.provider, inline=True)
        publisher.publish(
            [item],
            fetched_at=timezone.now(),
            folder=folder if uid else None,
            uids=[uid] if uid else None,
        )
        publisher.drain()
        return (
            Message.objects.filter(
                account=self.account, message_id_header=message_id, locations__folder=folder
            )
            .order_by("-pk")
            .first()
        )


def _results(outcome: SendOutcome) -> list[RecipientResult]:
    return [
        RecipientResult(address=r.address, accepted=r.accepted, code=r.code, reply=r.reply)
        for r in outcome.recipients
    ]


def _send_error(exc: SmtpError) -> SendTransient | SendPermanent:
    results = _results(exc.outcome) if exc.outcome else None
    if isinstance(exc, SmtpAuthError):
        return SendAuthFailed(exc.message, results)
    if isinstance(exc, SmtpPermanentError):
        return SendPermanent(exc.message, results)
    return SendTransient(exc.message, results)
