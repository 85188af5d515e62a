from django.urls import path
from rest_framework.routers import SimpleRouter

from escalation.api.classification import ClassificationRuleViewSet, SignatureViewSet
from escalation.api.fallout import FalloutViewSet
from escalation.api.reports import JUnitReportView, SarifReportView, SecretsReportView, TrivyReportView
from escalation.api.retry import RetryAdviceView
from escalation.api.views import EventView, FailureViewSet
from escalation.api.webhooks import GitHubWebhookView, GitLabWebhookView

router = SimpleRouter()
router.register("failures", FailureViewSet, basename="failure")
router.register("classification/rules", ClassificationRuleViewSet, basename="classification-rule")
router.register("signatures", SignatureViewSet, basename="signature")
router.register("fallouts", FalloutViewSet, basename="fallout")

urlpatterns = [
    path("events/", EventView.as_view(), name="events"),
    path("webhooks/github/<str:source>/", GitHubWebhookView.as_view(), name="webhook-github"),
    path("webhooks/gitlab/<str:source>/", GitLabWebhookView.as_view(), name="webhook-gitlab"),
    path("reports/junit/", JUnitReportView.as_view(), name="report-junit"),
    path("reports/sarif/", SarifReportView.as_view(), name="report-sarif"),
    path("reports/trivy/", TrivyReportView.as_view(), name="report-trivy"),
    path("reports/secrets/", SecretsReportView.as_view(), name="report-secrets"),
    path("retry-advice/", RetryAdviceView.as_view(), name="retry-advice"),
    *router.urls,
]
