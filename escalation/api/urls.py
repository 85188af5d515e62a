from django.urls import path
from rest_framework.routers import SimpleRouter

from escalation.api.views import EventView, FailureViewSet

router = SimpleRouter()
router.register("failures", FailureViewSet, basename="failure")

urlpatterns = [
    path("events/", EventView.as_view(), name="events"),
    *router.urls,
]
