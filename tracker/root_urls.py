from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from tracker.views import accounts

urlpatterns = [
    path("accounts/login/", accounts.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Single sign-on (OpenID Connect); 404 unless OIDC_RP_CLIENT_ID is set.
    path("accounts/sso/", accounts.sso_start, name="oidc_authentication_init"),
    path("accounts/sso/callback/", accounts.sso_callback, name="oidc_authentication_callback"),
    # The language switch is on the login page too.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("admin/", admin.site.urls),
    path("", include("tracker.urls")),
]
