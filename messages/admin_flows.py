"""How each provider adds an account in the admin, registered by the provider's own admin module
(the store never imports a sync app): "Accounts › Add" lists these flows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest


@dataclass(frozen=True)
class AddFlow:
    provider: str
    title: str
    description: str
    url_name: str  # the admin URL where the flow starts
    allowed: Callable[[HttpRequest], bool]  # e.g. the provider admin's has_add_permission
    # The provider's settings page of an account: an admin URL name taking the account's pk.
    settings_url_name: str = ""


_flows: dict[str, AddFlow] = {}


def add_flow_register(flow: AddFlow) -> None:
    _flows[flow.provider] = flow


def add_flows() -> list[AddFlow]:
    return list(_flows.values())


def add_flow_for(provider: str) -> AddFlow | None:
    return _flows.get(provider)
