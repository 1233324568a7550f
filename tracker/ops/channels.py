"""Where alerts go: e-mail (Django's mail, TRACKER_ALERT_EMAILS) and a chat webhook
(TRACKER_ALERT_WEBHOOK_URL, Slack-compatible `{"text": …}`; Mattermost, Rocket.Chat and Teams
workflows accept the same).

A channel that fails is recorded on the alert and logged; it never stops the evaluation.
"""

import logging
import smtplib
from collections.abc import Iterator

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.utils import translation
from django.utils.translation import gettext as _

from tracker.models import Alert

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 10.0  # seconds; the evaluation runs again a minute later anyway


def message(alert: Alert, *, resolved: bool) -> tuple[str, str]:
    """(subject line, body) of the message about this alert, in the site's language."""
    with translation.override(settings.LANGUAGE_CODE):
        label = alert.get_rule_display()
        about = f" [{alert.subject}]" if alert.subject else ""
        if resolved and alert.resolved_at is not None:
            subject = _("[Tracker] RESOLVED: %(rule)s%(about)s") % {"rule": label, "about": about}
            body = _("Resolved at %(at)s, after it started at %(started)s.") % {
                "at": alert.resolved_at.isoformat(timespec="seconds"),
                "started": alert.started_at.isoformat(timespec="seconds"),
            }
        else:
            subject = _("[Tracker] ALERT: %(rule)s%(about)s") % {"rule": label, "about": about}
            body = _("%(summary)s Threshold: %(threshold)d. Started at %(started)s.") % {
                "summary": alert.summary,
                "threshold": alert.threshold,
                "started": alert.started_at.isoformat(timespec="seconds"),
            }
    return subject, body


def deliver(alert: Alert, *, resolved: bool) -> Iterator[tuple[str, bool, str]]:
    """Send the message to every configured channel; yield (channel, ok, detail) for each."""
    subject, body = message(alert, resolved=resolved)
    if settings.TRACKER_ALERT_EMAILS:
        yield ("email", *_email(subject, body))
    if settings.TRACKER_ALERT_WEBHOOK_URL:
        yield ("webhook", *_webhook(subject, body, resolved))


def _email(subject: str, body: str) -> tuple[bool, str]:
    recipients = settings.TRACKER_ALERT_EMAILS
    try:
        send_mail(subject, body, settings.TRACKER_ALERT_FROM_EMAIL, recipients)
    except (OSError, smtplib.SMTPException) as e:
        logger.warning("alert e-mail not sent: %s: %s", type(e).__name__, e)
        return False, f"{type(e).__name__}: {e}"[:500]
    return True, ", ".join(recipients)


def _webhook(subject: str, body: str, resolved: bool) -> tuple[bool, str]:
    payload = {
        "text": f"{subject}\n{body}",
        "attachments": [{"color": "good" if resolved else "danger", "text": body}],
    }
    try:
        response = httpx.post(
            settings.TRACKER_ALERT_WEBHOOK_URL, json=payload, timeout=WEBHOOK_TIMEOUT
        )
    except httpx.HTTPError as e:
        # The URL of a chat webhook is a secret (it carries the token): never log it.
        logger.warning("alert webhook not sent: %s", type(e).__name__)
        return False, type(e).__name__
    if not response.is_success:
        logger.warning("alert webhook answered %d", response.status_code)
        return False, f"HTTP {response.status_code}"
    return True, f"HTTP {response.status_code}"
