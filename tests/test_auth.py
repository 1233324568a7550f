"""The shared permission cache: faster pages, and every change still takes effect at once."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache

from tracker import roles
from tracker.permission_cache import _key

# The shared cache holds what these tests exercise: run again with REDIS_URL (make test-redis).
pytestmark = [pytest.mark.django_db, pytest.mark.cache]

CARD_PAGE = "/cards/ISS7K2M40Q/crd-nobody/"


@pytest.fixture
def amy(client) -> User:
    user = User.objects.create_user("amy", password="pw")
    client.force_login(user)
    return user


def test_a_users_permissions_are_read_once_and_then_come_from_the_cache(
    client, amy, django_assert_max_num_queries
):
    amy.groups.add(Group.objects.get(name=roles.AGENTS))
    client.get(CARD_PAGE)
    assert "tracker.view_cardorder" in cache.get(_key(amy))
    # Session, user, the cached permissions, the order lookup, the audit row.
    with django_assert_max_num_queries(5):
        assert client.get(CARD_PAGE).status_code == 404


def test_joining_and_leaving_a_group_takes_effect_at_once(client, amy):
    assert client.get(CARD_PAGE).status_code == 403
    amy.groups.add(Group.objects.get(name=roles.AGENTS))
    assert client.get(CARD_PAGE).status_code == 404  # allowed: the card is simply unknown
    amy.groups.clear()
    assert client.get(CARD_PAGE).status_code == 403


def test_a_group_losing_a_permission_loses_it_for_every_member_at_once(client, amy):
    agents = Group.objects.get(name=roles.AGENTS)
    amy.groups.add(agents)
    assert client.get(CARD_PAGE).status_code == 404
    agents.permissions.remove(Permission.objects.get(codename="view_cardorder"))
    assert client.get(CARD_PAGE).status_code == 403


def test_a_deactivated_user_is_refused_at_once(client, amy):
    amy.groups.add(Group.objects.get(name=roles.AGENTS))
    assert client.get(CARD_PAGE).status_code == 404
    amy.is_active = False
    amy.save()
    assert client.get(CARD_PAGE).status_code in (302, 403)


def test_emptying_a_group_from_its_side_refuses_its_former_members_at_once(client, amy):
    agents = Group.objects.get(name=roles.AGENTS)
    amy.groups.add(agents)
    assert client.get(CARD_PAGE).status_code == 404
    agents.user_set.clear()
    assert client.get(CARD_PAGE).status_code == 403


def test_a_deleted_group_no_longer_grants_its_permissions(client, amy):
    extra = Group.objects.create(name="Temporary agents")
    extra.permissions.set(Group.objects.get(name=roles.AGENTS).permissions.all())
    amy.groups.add(extra)
    assert client.get(CARD_PAGE).status_code == 404
    extra.delete()
    assert client.get(CARD_PAGE).status_code == 403


def test_a_permission_taken_from_its_groups_from_its_side_takes_effect_at_once(client, amy):
    amy.groups.add(Group.objects.get(name=roles.AGENTS))
    assert client.get(CARD_PAGE).status_code == 404
    Permission.objects.get(codename="view_cardorder").group_set.clear()
    assert client.get(CARD_PAGE).status_code == 403
