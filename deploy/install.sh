#!/bin/sh
# Install or upgrade Tracker in /srv/tracker from a checkout (or an unpacked source release), as
# root: the exact, hashed dependencies of requirements/base.txt, then the app itself, not editable.
# Afterwards: migrate, collect the static files, restart the services.
#
#   sudo deploy/install.sh            # from the checkout's top directory
set -eu
PREFIX=${PREFIX:-/srv/tracker}
PYTHON=${PYTHON:-python3.12}

id tracker >/dev/null 2>&1 || useradd --system --home-dir "$PREFIX" --shell /usr/sbin/nologin tracker
install -d -o tracker -g tracker "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet --require-hashes -r requirements/base.txt
"$PREFIX/venv/bin/pip" install --quiet --no-deps .

install -d -m 750 -o root -g tracker /etc/tracker
[ -f /etc/tracker/env ] || install -m 640 -o root -g tracker deploy/env.example /etc/tracker/env
install -m 644 deploy/systemd/* /etc/systemd/system/
systemctl daemon-reload

# As the service user, with the services' environment.
admin() {
    runuser -u tracker -- sh -c 'set -a; . /etc/tracker/env; set +a; exec "$0" "$@"' \
        "$PREFIX/venv/bin/django-admin" "$@"
}
admin check --deploy        # silent when the settings are production-safe
admin migrate --no-input    # tables, cache table, the three role groups
admin collectstatic --no-input
systemctl reload-or-restart tracker-web.service
systemctl restart 'tracker-applier@*.service' 'tracker-worker@*.service' tracker-alerts.service || true
echo "Installed. First time: edit /etc/tracker/env, then"
echo "  systemctl enable --now tracker-web tracker-applier@1 tracker-applier@2 \\"
echo "      tracker-worker@1 tracker-worker@2 tracker-reconcile.timer tracker-alerts tracker-purge.timer"
echo "  and create an administrator: django-admin createsuperuser (same environment)."
