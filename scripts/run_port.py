"""`make run`'s web port: is it free, who holds it, which one is free instead.

Checked before anything starts, so a taken port is one clear line, not a traceback from
runserver between the other processes' banners. Standard library only.
"""

from __future__ import annotations

import socket
import subprocess


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether runserver could listen on HOST:PORT (it sets SO_REUSEADDR too, so a port in
    TIME_WAIT counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str:
    """The process listening on PORT as `ss` shows it (`"name",pid=N`), or "" when unknown."""
    try:
        out = subprocess.run(
            ["ss", "-H", "-ltnp", f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        if "users:((" in line:
            return line.split("users:((", 1)[1].split(")", 1)[0]
    return ""


def next_free_port(start: int, host: str = "127.0.0.1", tries: int = 100) -> int | None:
    for port in range(start + 1, min(start + 1 + tries, 65536)):
        if port_free(port, host):
            return port
    return None


def port_taken_message(port: int, host: str = "127.0.0.1") -> str | None:
    """What to tell the user when HOST:PORT is taken; None when it is free."""
    if port_free(port, host):
        return None
    holder = port_holder(port)
    by = f" by {holder}" if holder else ""
    free = next_free_port(port, host)
    instead = f"PORT={free} make run" if free else "PORT=<another port> make run"
    return (
        f"Port {port} on {host} is already in use{by}: the web server cannot start there.\n"
        f"  Stop what holds it, or run on another port: {instead}"
    )
