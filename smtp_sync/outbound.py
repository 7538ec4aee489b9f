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
A burst (messages.outbox_burst) appends its chunk's copies ahead, in one MULTIAPPEND, with the
keyword READY_KEYWORD instead: a copy with only that keyword was never in flight, so it proves
absence like no copy at all. Each copy's keyword becomes SENDING_KEYWORD (one STORE FLAGS)
just before its SMTP transaction, and from there on the rules above hold. Ahead-appending is
done only in a Sent folder that keeps keywords.
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
from dataclasses import dataclass
from datetime import timedelta

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

from .imap import (
    FetchedMessage,
    FolderStatus,
    ImapAuthError,
    ImapConnection,
    ImapError,
    ImapServer,
)
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
READY_KEYWORD = "$OutboxReady"
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


@dataclass
class _Copy:
    """An attempt's copy in Sent: its UID, whether this attempt appended it (else an earlier
    attempt's copy is reused), whether its keyword is removed (the server took the message),
    whether it still waits with READY_KEYWORD."""

    uid: int
    appended: bool
    confirmed: bool = False
    ready: bool = False  # appended ahead by a burst, not in flight yet (READY_KEYWORD)


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
        self._copies: dict[int, _Copy] = {}  # by outbound id, this attempt's
        self._look_first: set[int] = set()  # a lost MULTIAPPEND may have left their copies
        self._server: ImapServer | None = None
        self._endpoint: SmtpEndpoint | None = None
        self._hold: contextlib.ExitStack | None = None  # inside `held`
        self._held: ImapConnection | None = None  # the burst's session, once taken
        self._held_sent: FolderStatus | None = None  # Sent, selected on it

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """One IMAP session for every message sent inside (a burst), taken at its first use:
        Sent is selected once, not before every command."""
        with contextlib.ExitStack() as stack:
            self._hold = stack
            try:
                yield
                self._ready_copies_delete()
            except Exception:
                self._ready_copies_delete()
                raise
            finally:
                self._hold, self._held, self._held_sent = None, None, None

    # OutboundSender ---------------------------------------------------------------------------
    def send(self, outbound: OutboundMessage, recipients: list[str]) -> list[RecipientResult]:
        raw = bytes(outbound.raw)
        copy = self._copy_before_sending(outbound, raw) if self.saves_copy else None
        try:
            if self._endpoint is None:  # once per sender (a burst): it decrypts the secrets
                self._endpoint = smtp_endpoint_for(self.account)
            with _sessions.session(self._endpoint, self.session_factory) as session:
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
                keywords_kept = self._select_sent(conn, folder).keeps_keyword(SENDING_KEYWORD)
        except ImapAuthError as exc:
            raise SendAuthFailed(str(exc)) from exc
        except ImapError as exc:
            logger.info("outbound %s: Sent cannot be searched now: %s", outbound.pk, exc)
            return None
        if self.saves_copy and not keywords_kept:
            return None  # a server that drops keywords: a copy proves nothing
        copies = [{f.lower() for f in copy_flags} for copy_flags in flags.values()]
        sending, ready = SENDING_KEYWORD.lower(), READY_KEYWORD.lower()
        if any(sending not in copy and ready not in copy for copy in copies):
            return True
        if all(ready in copy and sending not in copy for copy in copies):
            return False  # appended ahead by a burst, never in flight
        return None  # copied before sending, never confirmed: may or may not have gone

    def after_sent(self, outbound: OutboundMessage, *, found: bool) -> Message | None:
        """Make sure Sent has the copy (\\Seen, no keyword) and store it; the stored one."""
        return self.after_sent_many([outbound], just_sent=not found).get(outbound.pk)

    def after_sent_many(
        self, sent: list[OutboundMessage], *, just_sent: bool = True
    ) -> dict[int, Message | None]:
        """`after_sent` for several messages: one session, one FETCH, the copies stored in one
        batch; the stored ones by outbound id. JUST_SENT: sent by this sender now, so the
        server's own copies are looked for among the recent messages only (not after a lost
        outcome, which may be days old)."""
        with self._imap() as conn:
            folder = _sent_folder(self.account, conn)
            copies = {o.pk: self._copies.pop(o.pk) for o in sent if o.pk in self._copies}
            missing = [o for o in sent if o.pk not in copies]
            # The server's own copies of what was just sent: received since yesterday (a
            # day's margin for its clock and time zone), not a search of all of Sent.
            since = (timezone.now() - timedelta(days=1)).date() if just_sent else None
            found = (
                conn.search_message_ids(folder, [o.message_id_header for o in missing], since=since)
                if missing
                else {}
            )
            for outbound in missing:
                uids = found.get(outbound.message_id_header)
                if not uids and self.saves_copy:
                    conn.append(folder, bytes(outbound.raw), [SEEN])
                    uids = conn.search_message_id(folder, outbound.message_id_header)
                if uids:
                    copies[outbound.pk] = _Copy(uids[0], appended=False)
            if not copies:
                return {}
            status = self._select_sent(conn, folder)
            unconfirmed = [c.uid for c in copies.values() if not c.confirmed]
            if unconfirmed:
                conn.set_flags(unconfirmed, [SENDING_KEYWORD], add=False)
            searched = [c.uid for c in copies.values() if not c.appended]
            if searched:
                conn.set_flags(searched, [SEEN], add=True)
            fetched = conn.fetch_messages(sorted({c.uid for c in copies.values()}))
        return self._store(sent, folder, status.uidvalidity, fetched)

    # The copy in Sent ---------------------------------------------------------------------------
    def before_sending(self, outbounds: list[OutboundMessage]) -> None:
        """A burst's copies, before any of OUTBOUNDS is sent: the first attempts' copies are
        appended to Sent in one MULTIAPPEND (one write on the server instead of one per
        message); `send` then finds its copy there. When that fails, each message's `send`
        appends its own, looking first for one the lost answer may have left."""
        first = [o for o in outbounds if o.attempts == 1 and o.pk not in self._copies]
        if not self.saves_copy or len(first) < 2:
            return
        try:
            with self._imap() as conn:
                folder = _sent_folder(self.account, conn)
                status = self._select_sent(conn, folder)
                if not conn.has("MULTIAPPEND") or not status.keeps_keyword(READY_KEYWORD):
                    return
                raws = [bytes(o.raw) for o in first]
                self._look_first.update(o.pk for o in first)
                appended = conn.append_many(folder, raws, [SEEN, READY_KEYWORD])
                if appended is not None and appended[0] == status.uidvalidity:
                    uids = dict(zip((o.message_id_header for o in first), appended[1], strict=True))
                else:
                    found = conn.search_message_ids(folder, [o.message_id_header for o in first])
                    uids = {mid: found_uids[0] for mid, found_uids in found.items()}
        except ImapError as exc:
            logger.info(
                "account %s: the burst's copies are appended one by one: %s", self.account.pk, exc
            )
            return
        for outbound in first:
            uid = uids.get(outbound.message_id_header)
            if uid is not None:
                self._copies[outbound.pk] = _Copy(uid, appended=True, ready=True)
                self._look_first.discard(outbound.pk)

    def _ready_copies_delete(self) -> None:
        """Copies appended ahead for messages the burst did not reach (it stopped): deleted,
        as their next attempt appends its own."""
        ready = {pk: c.uid for pk, c in self._copies.items() if c.ready}
        if not ready:
            return
        try:
            with self._imap() as conn:
                self._select_sent(conn, _sent_folder(self.account, conn))
                conn.delete(list(ready.values()))
        except ImapError as exc:
            logger.warning("outbound %s: copies appended ahead stay in Sent: %s", list(ready), exc)
        for pk in ready:
            del self._copies[pk]

    def accepted(self, outbound: OutboundMessage, copy: int) -> None:
        """The server took the message: the copy loses its keyword (the proof it was sent)."""
        try:
            with self._imap() as conn:
                self._select_sent(conn, _sent_folder(self.account, conn))
                conn.set_flags([copy], [SENDING_KEYWORD], add=False)
            self._copies[outbound.pk].confirmed = True
        except ImapError as exc:  # after_sent removes it again; until then "cannot tell"
            logger.warning("outbound %s: sent, its copy not confirmed yet: %s", outbound.pk, exc)

    def _copy_before_sending(self, outbound: OutboundMessage, raw: bytes) -> int:
        """The copy in Sent, with the keyword, before the SMTP transaction; its UID. A copy
        already there (an earlier attempt that reached some recipients) is reused."""
        prepared = self._copies.get(outbound.pk)
        try:
            with self._imap() as conn:
                folder = _sent_folder(self.account, conn)
                if prepared is not None and prepared.ready:  # before_sending appended it
                    self._select_sent(conn, folder)
                    conn.replace_flags([prepared.uid], [SEEN, SENDING_KEYWORD])
                    prepared.ready = False
                    return prepared.uid
                # Only an earlier attempt can have left a copy: the first one need not look.
                uids = (
                    conn.search_message_id(folder, outbound.message_id_header)
                    if outbound.attempts > 1 or outbound.pk in self._look_first
                    else []
                )
                appended = not uids
                if uids:  # this attempt is in flight again until the server answers
                    conn.replace_flags(uids[:1], [SEEN, SENDING_KEYWORD])
                else:
                    at = conn.append(folder, raw, [SEEN, SENDING_KEYWORD])
                    status = self._select_sent(conn, folder)
                    if at is not None and at[0] == status.uidvalidity:
                        uids = [at[1]]
                    else:
                        uids = conn.search_message_id(folder, outbound.message_id_header)
                if not uids:
                    raise ImapError(f"the copy appended to {folder} cannot be found")
                self._copies[outbound.pk] = _Copy(uids[0], appended=appended)
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
        appended = self._copies.pop(outbound.pk).appended
        try:
            with self._imap() as conn:
                self._select_sent(conn, _sent_folder(self.account, conn))
                if appended:
                    conn.delete([copy])
                else:
                    conn.set_flags([copy], [SENDING_KEYWORD], add=False)
        except ImapError as exc:
            logger.warning("outbound %s: its copy in Sent stays as it is: %s", outbound.pk, exc)

    def _select_sent(self, conn: ImapConnection, folder: str) -> FolderStatus:
        """SELECT Sent read-write; on a burst's held session only once (what is read of the
        status, UIDVALIDITY and PERMANENTFLAGS, does not change while it stays selected)."""
        if conn is not self._held or self._held_sent is None:
            status = conn.select(folder, readonly=False)
            if conn is self._held:
                self._held_sent = status
            return status
        return self._held_sent

    @contextlib.contextmanager
    def _imap(self) -> Iterator[ImapConnection]:
        if self._server is None:
            self._server = server_for(self.account, self.account.imap_settings)
        if self._hold is None:
            with self.connection_factory(self._server) as conn:
                yield conn
            return
        if self._held is None:
            self._held = self._hold.enter_context(self.connection_factory(self._server))
        try:
            yield self._held
        except ImapError:  # its state is unsure: the next command gets a new session
            self._held, self._held_sent = None, None
            raise

    def _store(
        self,
        sent: list[OutboundMessage],
        folder_name: str,
        uidvalidity: int,
        fetched: list[FetchedMessage],
    ) -> dict[int, Message | None]:
        """Store the copies as a sync of the folder would (pipeline, same items, one batch);
        the stored ones by outbound id."""
        folder = folders_by_name(self.account, [folder_name])[folder_name]
        # Under a UIDVALIDITY the store does not know (its folder is stale), no UID: the
        # messages are stored in the folder and the next sync gives them their UIDs.
        known = folder.uidvalidity in (None, uidvalidity)
        items = [fetched_item(m, folder_name, uid=m.uid if known else None) for m in fetched]
        if items:
            publisher = BatchPublisher(self.account.pk, self.account.provider, inline=True)
            publisher.publish(
                items,
                fetched_at=timezone.now(),
                folder=folder if known else None,
                uids=[m.uid for m in fetched] if known else None,
            )
            publisher.drain()
        by_message_id = dict(
            Message.objects.filter(
                account=self.account,
                message_id_header__in=[o.message_id_header for o in sent],
                locations__folder=folder,
            )
            .order_by("pk")
            .values_list("message_id_header", "pk")
        )
        stored = Message.objects.in_bulk(by_message_id.values())
        return {o.pk: stored.get(by_message_id.get(o.message_id_header, 0)) for o in sent}


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
