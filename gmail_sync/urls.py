"""The Gmail provider's own routes, mounted under /gmail/ (not under /api/: browsers and
Google reach them, without an API token)."""

from django.urls import path

from . import oauth_views

app_name = "gmail_sync"

urlpatterns = [
    # OAuth: where Google sends the browser back after the consent screen.
    path("oauth/callback", oauth_views.oauth_callback, name="oauth-callback"),
]
