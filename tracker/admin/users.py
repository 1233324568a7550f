"""Users and groups: administrators give people a role (a group) and admin access, nothing more.

Roles are defined in tracker/roles.py and set again after every migrate, so a person's rights come
from their groups only: administrators who are not superusers can neither make someone a
superuser nor grant a single permission by hand (which could allow deleting orders).

Nor can they take over an account worth more than their own: only a superuser changes a
superuser (their password, their flags, deactivating them) or another administrator.
"""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

from tracker.admin.common import CheckedSelection, MaskPansInForms
from tracker.roles import ADMINISTRATORS

_GRANTS = ("is_superuser", "user_permissions")

admin.site.unregister(User)
admin.site.unregister(Group)


def _beyond_reach(request: HttpRequest, user: User | None) -> bool:
    """True when the signed-in user may not change this account: it is a superuser, or another
    administrator, and they are not a superuser."""
    if user is None or request.user.is_superuser:
        return False
    if user.is_superuser:
        return True
    return user.pk != request.user.pk and user.groups.filter(name=ADMINISTRATORS).exists()


@admin.register(User)
class TrackerUserAdmin(CheckedSelection, MaskPansInForms, UserAdmin):
    list_display = ("username", "first_name", "last_name", "is_staff", "is_active")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if request.user.is_superuser:
            return readonly
        return [*readonly, *_GRANTS]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Also guards the password form (/admin/auth/user/<id>/password/), which asks this.
        return super().has_change_permission(request, obj) and not _beyond_reach(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deactivate instead: their name stays on the corrections and audit they left.
        return request.user.is_superuser and super().has_delete_permission(request, obj)


@admin.register(Group)
class TrackerGroupAdmin(CheckedSelection, MaskPansInForms, GroupAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser
