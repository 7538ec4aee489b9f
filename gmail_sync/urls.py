from django.urls import path

from .push_view import gmail_push

urlpatterns = [
    # --- Push notifications (Pub/Sub push subscription endpoint) ---
    path("push", gmail_push, name="gmail-push"),
    # --- end push notifications ---
]
