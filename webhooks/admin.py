import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.stripe_dashboard import stripe_links
from payments_project.errors import ApplicationError
from payments_project.roles import Role, RoleRestrictedAdmin, has_role
from webhooks.models import Discrepancy, WebhookEvent
from webhooks.reconciliation import discrepancy_mark_resolved, discrepancy_resync
from webhooks.services import webhook_event_mark_ignored, webhook_event_replay


@admin.register(WebhookEvent)
class WebhookEventAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = (Role.FINANCE, Role.SUPPORT)
    list_display = (
        "event_id",
        "type",
        "status",
        "attempts",
        "livemode",
        "provider_created_at",
        "received_at",
        "open_in_stripe",
    )
    list_filter = ("status", "type", "livemode", ("received_at", admin.DateFieldListFilter))
    search_fields = ("=event_id", "=object_id", "=customer_id")
    date_hierarchy = "received_at"
    ordering = ("-received_at",)
    actions = ("replay", "mark_ignored")
    exclude = ("raw_body",)
    readonly_fields = (
        "provider",
        "event_id",
        "type",
        "object_id",
        "customer_id",
        "livemode",
        "api_version",
        "provider_created_at",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "received_at",
        "processed_at",
        "payload",
        "open_in_stripe",
    )

    @admin.display(description="Stripe")
    def open_in_stripe(self, event: WebhookEvent) -> SafeString:
        return stripe_links(event.event_id, event.object_id, event.customer_id)

    @admin.display(description="payload")
    def payload(self, event: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(json.loads(event.raw_body), indent=2, sort_keys=True))

    def _require_finance(self, request: HttpRequest) -> None:
        if not has_role(request.user, Role.FINANCE):
            raise PermissionDenied

    @admin.action(description="Replay the selected events (safe: handlers are idempotent)")
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        self._require_finance(request)
        for event in queryset:
            webhook_event_replay(event_id=event.id, staff_id=str(request.user.pk), request=request)
        self.message_user(request, f"{queryset.count()} event(s) queued for replay.", messages.SUCCESS)

    @admin.action(description="Mark the selected events ignored")
    def mark_ignored(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        self._require_finance(request)
        changed = sum(
            webhook_event_mark_ignored(event_id=event.id, staff_id=str(request.user.pk), request=request)
            for event in queryset
        )
        self.message_user(request, f"{changed} event(s) marked ignored.", messages.SUCCESS)


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> QuerySet[Discrepancy]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class ResolutionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea, max_length=2000, help_text="Why this needs no (further) change")


@admin.register(Discrepancy)
class DiscrepancyAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = (Role.FINANCE, Role.SUPPORT)
    list_display = (
        "kind",
        "object_type",
        "object_id",
        "our_value",
        "stripe_value",
        "first_seen_at",
        "resolved_at",
        "open_in_stripe",
    )
    list_filter = (OpenFilter, "kind", "object_type", "resolution", ("first_seen_at", admin.DateFieldListFilter))
    search_fields = ("=object_id", "=stripe_id")
    ordering = ("-first_seen_at",)
    actions = ("resync_from_stripe", "mark_resolved")
    readonly_fields = [*(f.name for f in Discrepancy._meta.fields), "open_in_stripe"]

    @admin.display(description="Stripe")
    def open_in_stripe(self, discrepancy: Discrepancy) -> SafeString:
        return stripe_links(discrepancy.stripe_id)

    @admin.action(description="Resync the selected objects from Stripe")
    def resync_from_stripe(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        if not has_role(request.user, Role.FINANCE):
            raise PermissionDenied
        for discrepancy in queryset:
            try:
                discrepancy_resync(discrepancy_id=discrepancy.id, staff_id=str(request.user.pk), request=request)
            except ApplicationError as exc:
                self.message_user(request, f"{discrepancy}: {exc.detail}", messages.ERROR)
        self.message_user(request, "Resync done; see the discrepancies' status.", messages.INFO)

    @admin.action(description="Mark the selected discrepancies resolved (with a reason)")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> TemplateResponse | None:
        if not has_role(request.user, Role.FINANCE):
            raise PermissionDenied
        form = ResolutionForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            resolved = discrepancy_mark_resolved(
                discrepancy_ids=queryset.values_list("id", flat=True),
                staff_id=str(request.user.pk),
                reason=form.cleaned_data["reason"],
                request=request,
            )
            self.message_user(request, f"{resolved} discrepancy(ies) marked resolved.", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/webhooks/discrepancy/mark_resolved.html",
            {**self.admin_site.each_context(request), "discrepancies": queryset, "form": form},
        )
