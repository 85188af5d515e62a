"""The digests and reports as sent: their figures and the rendered HTML, read-only."""

import json

from django.contrib import admin
from django.utils.html import format_html

from escalation.admin import ReadOnlyAdmin
from escalation.models import Digest


@admin.register(Digest)
class DigestAdmin(ReadOnlyAdmin):
    """One row per digest sent (or stored with nothing to report); the figures are the stored JSON."""

    list_display = ["created_at", "kind", "audience", "team", "period_start", "period_end", "subject"]
    list_filter = ["kind", "role"]
    search_fields = ["subject", "audience"]
    list_select_related = ["team"]
    date_hierarchy = "period_start"
    fields = ["kind", "audience", "team", "role", "period_start", "period_end", "created_at", "subject",
              "rendered", "figures_shown", "text"]  # fmt: skip
    readonly_fields = ["rendered", "figures_shown"]

    @admin.display(description="HTML as sent")
    def rendered(self, obj: Digest) -> str:
        # The e-mail's HTML in a sandboxed frame: its inline styles stay out of the admin's page.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" style="width:100%;height:640px;border:1px solid #ccc;"></iframe>', obj.html
        )

    @admin.display(description="figures")
    def figures_shown(self, obj: Digest) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.figures, indent=2, ensure_ascii=False))
