"""/api/webhooks/ (namespace "webhooks-api")."""

from django.urls import path

import messages.api.urls  # noqa: F401  (registers the "id" path converter)

from . import views

app_name = "webhooks-api"

urlpatterns = [
    path("", views.EndpointListView.as_view(), name="endpoint-list"),
    path("<id:pk>/", views.EndpointDetailView.as_view(), name="endpoint-detail"),
    path(
        "<id:pk>/rotate-secret/",
        views.EndpointRotateSecretView.as_view(),
        name="endpoint-rotate-secret",
    ),
    path("<id:pk>/deliveries/", views.DeliveryListView.as_view(), name="delivery-list"),
    path(
        "<id:pk>/deliveries/<id:delivery_pk>/redeliver/",
        views.DeliveryRedeliverView.as_view(),
        name="delivery-redeliver",
    ),
]
