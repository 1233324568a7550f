"""Permissions kept in the shared cache, so a staff page does not rebuild them on every request.

Django's ModelBackend reads a user's permissions with two joins on each request that checks one.
The sets rarely change: they are kept for PERMISSIONS_TTL and dropped at once when the user, their
groups or a group's permissions change (signals below), so a change still takes effect at once.
"""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.db.models.signals import m2m_changed, post_save, pre_delete
from django.dispatch import receiver

PERMISSIONS_TTL = 300  # seconds


def _key(user) -> str:
    # date_joined tells a user from another that reuses a deleted one's id (tests flush tables).
    return f"tracker:perms:{user.pk}:{user.date_joined.timestamp():.6f}"


class CachedPermissionsBackend(ModelBackend):
    """ModelBackend whose permission set comes from the shared cache when it can."""

    def get_all_permissions(self, user_obj, obj=None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            permissions = cache.get(_key(user_obj))
            if permissions is None:
                permissions = super().get_all_permissions(user_obj)
                cache.set(_key(user_obj), permissions, PERMISSIONS_TTL)
            user_obj._perm_cache = permissions
        return user_obj._perm_cache


def forget(users) -> None:
    """Drop the cached permissions of these users."""
    keys = [_key(user) for user in users]
    if keys:
        cache.delete_many(keys)


def _members(groups) -> list[User]:
    return list(User.objects.filter(groups__in=groups).only("pk", "date_joined").distinct())


@receiver(post_save, sender=User)
def _user_saved(sender, instance: User, **kwargs) -> None:
    forget([instance])  # is_active or is_superuser may have changed


@receiver(m2m_changed, sender=User.groups.through)
@receiver(m2m_changed, sender=User.user_permissions.through)
def _user_links_changed(sender, instance, action: str, pk_set, **kwargs) -> None:
    if isinstance(instance, User):
        if action.startswith("post_"):
            forget([instance])
    elif action == "pre_clear":
        # group.user_set.clear() or permission.user_set.clear(): read the members while they exist.
        forget(instance.user_set.only("pk", "date_joined"))
    elif action.startswith("post_") and pk_set:
        forget(User.objects.filter(pk__in=pk_set).only("pk", "date_joined"))


@receiver(m2m_changed, sender=Group.permissions.through)
def _group_permissions_changed(sender, instance, action: str, pk_set, **kwargs) -> None:
    if isinstance(instance, Group):
        if action.startswith("post_"):
            forget(_members([instance]))
    elif action == "pre_clear":
        forget(_members(instance.group_set.all()))  # permission.group_set.clear()
    elif action.startswith("post_") and pk_set:
        forget(_members(pk_set))


@receiver(pre_delete, sender=Group)
def _group_deleted(sender, instance: Group, **kwargs) -> None:
    forget(_members([instance]))
