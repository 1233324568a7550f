"""Card numbers (PANs): found and masked in one place, before anything is stored or logged.

A PAN here is a Luhn-valid run of 13 to 19 digits, written together or grouped as card numbers
are written (4-4-4-4, then up to 3 more digits for longer numbers; 4-6-5 and 4-6-4) by single
spaces or dashes. The grouping rule keeps digits that only happen to sit between dashes (a UUID's
groups, a date) from being taken for one. Masked, it keeps its first 6 and last 4 digits (what
PCI DSS allows to be shown) with `*` in between, written together: `411111******1111`. A masked
number is no longer a run of digits, so masking twice changes nothing.

Every door that takes text from outside calls mask_pans() (or mask_in_json() / mask_body()):
notification bodies and their headers, D1's operations (tracker/d1/schema.py), the search box,
card URLs, notes, the admin site's forms and log, CSV imports; the logging filter below covers
what is logged.
"""

import json
import logging
import re
from typing import Any

import orjson

# Digits in groups separated by single spaces or dashes, as long as it goes; card numbers are
# looked for inside each such run (two numbers may be written one after the other).
_RUN = re.compile(r"\d+(?:[ -]\d+)*")
_SEPARATOR = re.compile(r"([ -])")
# The quick test that almost every text fails: 13 digits, maybe separated. Only then is it read.
_MAYBE = re.compile(r"\d[\d -]{11,}\d")
# What mask_pans() leaves: an identifier shaped like this was a card number.
MASKED = re.compile(r"\d{6}\*{3,9}\d{4}")
_SHORTEST, _LONGEST = 13, 19
_MOST_GROUPS = 5  # 4-4-4-4-3


def luhn(digits: str) -> bool:
    """True when the string of digits passes the Luhn check."""
    total = 0
    for position, digit in enumerate(reversed(digits)):
        n = int(digit)
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _grouped_like_a_card(lengths: list[int]) -> bool:
    if len(lengths) == 1:
        return True
    return lengths in ([4, 4, 4, 4], [4, 6, 5], [4, 6, 4]) or (
        lengths[:4] == [4, 4, 4, 4] and len(lengths) == 5 and lengths[4] <= 3
    )


def _cards_in(text: str, run: re.Match[str]) -> list[tuple[int, int, str]]:
    """(start, end, digits) of each card number within one run of digits, left to right."""
    parts = _SEPARATOR.split(run.group())
    groups, separators = parts[0::2], parts[1::2]
    starts, at = [], run.start()
    for index, group in enumerate(groups):
        starts.append(at)
        at += len(group) + (1 if index < len(separators) else 0)
    before = text[run.start() - 1 : run.start()] if run.start() else ""
    after = text[run.end() : run.end() + 1]
    found, first = [], 0
    while first < len(groups):
        taken = None
        for last in range(min(len(groups), first + _MOST_GROUPS) - 1, first - 1, -1):
            window = groups[first : last + 1]
            digits = "".join(window)
            if not _SHORTEST <= len(digits) <= _LONGEST or len(set(separators[first:last])) > 1:
                continue
            if not _grouped_like_a_card([len(group) for group in window]):
                continue
            # Grouped digits touch letters only inside identifiers (a UUID's groups), never in a
            # written card number.
            ahead = separators[last] if last < len(separators) else after
            behind = separators[first - 1] if first else before
            if last > first and (behind.isalnum() or ahead.isalnum()):
                continue
            if luhn(digits):
                taken = (starts[first], starts[last] + len(groups[last]), digits)
                break
        if taken:
            found.append(taken)
            first = last + 1
        else:
            first += 1
    return found


def _masked(digits: str) -> str:
    return f"{digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]}"


def _runs(text: str):
    return (run for run in _RUN.finditer(text) if run.end() - run.start() >= _SHORTEST)


def _cards(text: str) -> list[tuple[int, int, str]]:
    return [card for run in _runs(text) for card in _cards_in(text, run)]


def contains_pan(text: str) -> bool:
    """True when the text holds a card number in clear."""
    if not text or not isinstance(text, str) or not _MAYBE.search(text):
        return False
    return any(_cards_in(text, run) for run in _runs(text))


def is_or_was_pan(text: str) -> bool:
    """True when the text holds a card number, in clear or already masked."""
    return contains_pan(text) or bool(MASKED.search(text or ""))


def mask_pans(text: str) -> str:
    """The text with every card number masked (first 6, last 4); anything else unchanged."""
    if not text or not isinstance(text, str) or not _MAYBE.search(text):
        return text
    pieces, kept = [], 0
    for start, end, digits in _cards(text):
        pieces += [text[kept:start], _masked(digits)]
        kept = end
    return "".join([*pieces, text[kept:]]) if pieces else text


def mask_bytes(raw: bytes) -> bytes:
    """mask_pans() for a body kept as bytes: digits, spaces and dashes are ASCII in every
    encoding JSON allows but UTF-16/32, which D1 does not send."""
    return mask_pans(bytes(raw).decode("latin-1")).encode("latin-1")


def mask_body(raw: bytes) -> bytes:
    """A JSON body with its card numbers masked: the same bytes when it holds none (the common
    case); otherwise the document written again with every string and number masked (a card
    number sent as a JSON number becomes a string), or, if it is not JSON, mask_bytes()."""
    raw = bytes(raw)
    if not contains_pan(raw.decode("latin-1")):
        return raw
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return mask_bytes(raw)
    return json.dumps(mask_in_json(document), ensure_ascii=False).encode()


def mask_in_json(value: Any) -> Any:
    """A JSON value with every string (keys included) masked; a card number sent as a JSON number
    becomes its masked text. The value itself when it holds none (the common case: one scan of
    its JSON text, cheaper than walking it in Python)."""
    try:
        if not _MAYBE.search(orjson.dumps(value).decode()):
            return value
    except TypeError:
        pass  # not what orjson writes (an integer beyond 64 bits, a lone surrogate): walked below
    return _masked_json(value)


def _masked_json(value: Any) -> Any:
    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, dict):
        return {mask_pans(key): _masked_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked_json(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**12:
        text = str(value)
        masked = mask_pans(text)
        return value if masked == text else masked
    return value


def mask_strings(values: dict[str, Any]) -> dict[str, Any]:
    """A form's cleaned data (or any flat mapping) with its text values masked."""
    return {
        name: mask_pans(value) if isinstance(value, str) else value
        for name, value in values.items()
    }


class MaskPansFilter(logging.Filter):
    """Masks card numbers in every log record that passes through the handler it is set on:
    the message, its arguments and the formatted exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logged as it is
            return True
        masked = mask_pans(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_pans(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_pans(record.stack_info)
        return True


_MASK_RECORD = MaskPansFilter()


def install_log_masking() -> None:
    """Mask every log record as it is made, whatever handler (a server's access log, a test's
    capture) later takes it; the filter above also guards the configured handlers."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "masks_pans", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _MASK_RECORD.filter(record)
        return record

    factory.masks_pans = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
