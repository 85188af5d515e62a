from django.contrib import admin

from portal.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log: visible and filterable, never editable."""

    list_display = ["at", "actor_label", "source", "action", "content_type", "object_repr", "reason"]
    list_filter = ["source", "action", "content_type", "at"]
    search_fields = ["object_repr", "actor_label", "object_id", "reason"]
    date_hierarchy = "at"

    def lookup_allowed(self, lookup, value, request=None):
        # The failure page links to its own entries by content type and object id.
        return lookup in {"object_id", "content_type__model"} or super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
