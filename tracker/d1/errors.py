"""What can go wrong when Tracker talks to D1, as a small family of exceptions.

Callers of tracker.d1.client get typed values or one of these, never an httpx exception or a raw
dict. Import them from tracker.d1.client.
"""


class D1Error(Exception):
    """D1 was unreachable or answered with something unusable."""


class D1Unavailable(D1Error):
    """Connect errors, timeouts, 5xx/429 after the retries, or the call's time budget spent."""


class D1BreakerOpen(D1Unavailable):
    """Failing fast: D1 failed too often lately and the shared circuit breaker is open."""


class D1Answered(D1Error):
    """D1 answered with an error status; its `{errorCode, error}` body is kept when it sent one."""

    def __init__(
        self, message: str, status_code: int, error_code: str | None, error: str | None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.error = error


class D1NotFound(D1Answered):
    """404: D1 does not know this card."""


class D1Rejected(D1Answered):
    """Any other 4xx (after one token refresh for a 401): retrying will not help."""


class D1BadResponse(D1Error):
    """A 2xx that cannot be parsed or is not about the card asked for."""
