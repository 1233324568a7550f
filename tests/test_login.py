import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains, assertRedirects

pytestmark = pytest.mark.django_db


def test_the_login_page_has_labelled_fields_and_the_language_switch(client):
    response = client.get(reverse("login"))
    assertContains(response, '<label for="id_username">Username</label>')
    assertContains(response, '<label for="id_password">Password</label>')
    assertContains(response, 'name="language" value="ja"')
    assertContains(response, "Skip to main content")


def test_an_agent_logs_in_and_lands_where_they_were_going(client, agent):
    response = client.post(
        reverse("login"),
        {"username": "agent-test", "password": "agent-test-pw", "next": "/?q=crd-1"},
    )
    assertRedirects(response, "/?q=crd-1", fetch_redirect_response=False)
    assertContains(client.get("/"), '<span class="who">agent-test</span>')


def test_a_wrong_password_is_refused_with_a_clear_message(client, agent):
    response = client.post(reverse("login"), {"username": "agent-test", "password": "nope"})
    assertContains(response, "Your username and password didn't match.")


def test_logging_out_returns_to_the_login_page(agent_client):
    response = agent_client.post(reverse("logout"))
    assertRedirects(response, reverse("login"))
    assertRedirects(agent_client.get("/"), f"{reverse('login')}?next=/")


def test_a_logged_in_user_asking_for_the_login_page_goes_to_search(agent_client):
    assertRedirects(agent_client.get(reverse("login")), reverse("tracker:search"))
