"""Owner scoping for the admin: a staff user sees and picks only their own accounts' objects.

Superusers see everyone's (they operate the platform); any other staff user, whatever model
permissions they hold, sees only objects of accounts they own, and may pick only themselves as
an owner and their own accounts in forms.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from .models import Account


def sees_everyone(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False))


def owned(queryset: QuerySet, user: Any, owner_path: str) -> QuerySet:
    """QUERYSET limited to USER's objects (OWNER_PATH leads to the owning user)."""
    if sees_everyone(user):
        return queryset
    return queryset.filter(**{owner_path: user.pk})


def owner_choices(user: Any) -> QuerySet:
    """Whom USER may make an account's owner: anyone active for a superuser, else themselves."""
    users = get_user_model().objects.filter(is_active=True)
    return users if sees_everyone(user) else users.filter(pk=user.pk)


class OwnerScopedAdmin:
    """A ModelAdmin mixin: the lists, pages, actions and FK choices of one owner.

    `owner_path` is the lookup from the model to the owning user's id."""

    owner_path = "account__owner"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return owned(super().get_queryset(request), request.user, self.owner_path)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        related: type[Model] = db_field.related_model
        if related is Account:
            kwargs["queryset"] = owned(Account.objects.all(), request.user, "owner")
        elif related is get_user_model():
            kwargs["queryset"] = owner_choices(request.user)
        elif "queryset" not in kwargs and hasattr(related, "account"):
            kwargs["queryset"] = owned(
                related._default_manager.all(), request.user, "account__owner"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]
