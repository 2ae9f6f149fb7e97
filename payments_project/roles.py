"""Staff roles for Django admin: one Django group per role (created by gdpr's data migration).

- finance: views everything, takes money actions (refunds, resyncs, ...)
- support: views, no money actions
- compliance: the audit trail and GDPR requests
- ops: operators (on call): the outbox, and replaying what went dead there
Superusers have every role. Only active staff accounts have any role.

Usage in an app's admin:

    class PaymentAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
        view_roles = (Role.FINANCE, Role.SUPPORT)

    ...and in a money action: `if not has_role(request.user, Role.FINANCE): raise PermissionDenied`.
"""

import contextlib
from enum import StrEnum
from typing import Any

from django.http import HttpRequest


class Role(StrEnum):
    FINANCE = "finance"
    SUPPORT = "support"
    COMPLIANCE = "compliance"
    OPS = "ops"


_CACHE_ATTR = "_jia_role_names"


def role_names(user: Any) -> frozenset[str]:
    """The user's role group names, read once per user object (i.e. once per request)."""
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        groups = getattr(user, "groups", None)
        names = groups.filter(name__in=[role.value for role in Role]).values_list("name", flat=True) if groups else []
        cached = frozenset(names)
        with contextlib.suppress(AttributeError):  # a user object that takes no attributes: don't cache
            setattr(user, _CACHE_ATTR, cached)
    return cached


def has_role(user: Any, *roles: Role | str) -> bool:
    """Whether an active staff user holds any of `roles` (superusers hold them all)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not (getattr(user, "is_active", False) and getattr(user, "is_staff", False)):
        return False
    if getattr(user, "is_superuser", False) is True:
        return True
    return bool(role_names(user) & {str(role) for role in roles})


class RoleRestrictedAdmin:
    """A ModelAdmin mixin: who may see and change a model is decided by roles, not model permissions.

    - view_roles: may list and view (change_roles may too);
    - change_roles: may change; add_roles and delete_roles default to nobody but superusers
      (financial records are made by the system, not typed in).
    """

    view_roles: tuple[Role, ...] = ()
    change_roles: tuple[Role, ...] = ()
    add_roles: tuple[Role, ...] = ()
    delete_roles: tuple[Role, ...] = ()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.view_roles, *self.change_roles)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.change_roles) if self.change_roles else _superuser(request)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return has_role(request.user, *self.add_roles) if self.add_roles else _superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.delete_roles) if self.delete_roles else _superuser(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)


def _superuser(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.is_superuser)
