"""Geometry for the small server-rendered SVG charts of the queue (no chart library, no JS)."""

from dataclasses import dataclass

WIDTH = 320  # SVG user units; the SVG scales to its container
BAR = 18
GAP = 6
LABEL = 150  # room for the labels left of horizontal bars


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    href: str
    x: float
    y: float
    width: float
    height: float
    extra: float = (
        0.0  # a second measure drawn over the first (the share needing attention in the funnel)
    )


def horizontal(items: list[tuple[str, int, str]], extra: list[int] | None = None) -> dict:
    """Bars left to right, one per (label, count, href); widths share the largest count."""
    largest = max([count for _, count, _ in items] + [1])
    room = WIDTH - LABEL - 40
    bars = [
        Bar(
            label,
            count,
            href,
            x=LABEL,
            y=i * (BAR + GAP),
            width=round(room * count / largest, 1),
            height=BAR,
            extra=round(room * (extra[i] if extra else 0) / largest, 1),
        )
        for i, (label, count, href) in enumerate(items)
    ]
    return {"bars": bars, "width": WIDTH, "height": len(items) * (BAR + GAP), "label_x": LABEL - 6}


def vertical(items: list[tuple[str, int, str]], height: int = 120) -> dict:
    """Columns bottom-up, one per (label, count, href), for a histogram."""
    largest = max([count for _, count, _ in items] + [1])
    column = (WIDTH - GAP * (len(items) + 1)) / max(len(items), 1)
    plot = height - 30  # room for labels under the columns and counts above
    bars = []
    for i, (label, count, href) in enumerate(items):
        tall = round(plot * count / largest, 1)
        bars.append(
            Bar(
                label,
                count,
                href,
                x=GAP + i * (column + GAP),
                y=14 + plot - tall,
                width=column,
                height=tall,
            )
        )
    return {"bars": bars, "width": WIDTH, "height": height, "base": 14 + plot}
