"""Users and groups: administrators give people a role (a group) and admin access, nothing more.

Roles are defined in tracker/roles.py and set again after every migrate, so a person's rights come
from their groups only: administrators who are not superusers can neither make someone a
superuser nor grant a single permission by hand (which could allow deleting orders).
"""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

_GRANTS = ("is_superuser", "user_permissions")

admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class TrackerUserAdmin(UserAdmin):
    list_display = ("username", "first_name", "last_name", "is_staff", "is_active")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if request.user.is_superuser:
            return readonly
        return [*readonly, *_GRANTS]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deactivate instead: their name stays on the corrections and audit they left.
        return request.user.is_superuser and super().has_delete_permission(request, obj)


@admin.register(Group)
class TrackerGroupAdmin(GroupAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser
