"""The Gmail provider's own routes, mounted under /gmail/ (not under /api/: browsers and
Google reach them, without an API token)."""

from django.urls import path

from . import oauth_views
from .push_view import gmail_push

app_name = "gmail_sync"

urlpatterns = [
    # OAuth: where Google sends the browser back after the consent screen.
    path("oauth/callback", oauth_views.oauth_callback, name="oauth-callback"),
    # --- Push notifications: Pub/Sub's push subscription endpoint (gmail_sync.push_view) ---
    path("push", gmail_push, name="push"),
    # --- end push notifications ---
]
