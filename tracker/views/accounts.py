"""Signing in: the login page (password, and single sign-on when it is set up) and the OpenID
Connect views of mozilla-django-oidc, which answer 404 while single sign-on is off."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc import views as oidc_views

from tracker import sso


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs) -> dict:
        context = super().get_context_data(**kwargs)
        context["sso_enabled"] = sso.enabled()
        context["sso_failed"] = self.request.GET.get("sso") == "failed"
        context["password_login"] = settings.TRACKER_PASSWORD_LOGIN
        return context


def _only_with_sso(view):
    @login_not_required
    def wrapped(request: HttpRequest) -> HttpResponse:
        if not sso.enabled():
            raise Http404("single sign-on is not set up")
        return view(request)

    return wrapped


sso_start = _only_with_sso(oidc_views.OIDCAuthenticationRequestView.as_view())
sso_callback = _only_with_sso(oidc_views.OIDCAuthenticationCallbackView.as_view())
