"""HTTP for webhook deliveries, through the outbound guard (emailplatform.netguard).

A requests Session whose connections are opened by `netguard.connect`: the URL's host is
resolved once and every address checked, the socket goes to the checked address, and TLS
verifies the certificate for the name. Plain http is allowed to allow-listed hosts only (the
guard's `plaintext` rule). No proxies from the environment (they would bypass the guard), no
redirects (a 3xx is a failed delivery, not a hop to an unchecked address).
"""

from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from emailplatform import netguard


def _connect(conn: HTTPConnection, policy: netguard.Policy, *, plaintext: bool) -> socket.socket:
    sock = netguard.connect(
        conn._dns_host,
        conn.port or (80 if plaintext else 443),
        timeout=conn.timeout,
        policy=policy,
        plaintext=plaintext,
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3's own sockets
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    policy: netguard.Policy

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.policy, plaintext=True)


class _GuardedHTTPSConnection(HTTPSConnection):
    policy: netguard.Policy

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.policy, plaintext=False)


def _pool_classes(policy: netguard.Policy) -> dict[str, type]:
    http_conn = type("HTTPConn", (_GuardedHTTPConnection,), {"policy": policy})
    https_conn = type("HTTPSConn", (_GuardedHTTPSConnection,), {"policy": policy})
    return {
        "http": type("HTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: netguard.Policy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)


def guarded_session(
    *, allow_internal: bool = False, ca_certs: str | None = None
) -> requests.Session:
    """A Session that reaches only what the guard allows (with ALLOW_INTERNAL: internal
    addresses too, for endpoints registered by staff)."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(netguard.policy_for(allow_internal), pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if ca_certs:
        session.verify = ca_certs
    return session
