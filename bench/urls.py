"""The portal's URLs plus the benchmark's bare endpoint, which is never part of the product."""

from django.urls import include, path

from bench.bare import BareEventView

urlpatterns = [
    path("bench/bare/", BareEventView.as_view(), name="bench-bare"),
    path("", include("portal.urls")),
]
