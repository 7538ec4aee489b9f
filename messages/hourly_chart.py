"""A bar chart of counts per hour as inline SVG, drawn on the server (no JavaScript)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 720
HEIGHT = 180
LEFT = 48  # room for the y axis' labels
BOTTOM = 22  # room for the hours
TOP = 10
LABEL_EVERY_HOURS = 3


def nice_ceiling(value: int) -> int:
    """The axis' top: VALUE rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 1
    while magnitude * 10 < value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def hourly_bar_chart(points: Sequence[tuple[datetime, int]], *, title: str) -> SafeString:
    """POINTS: (hour, count), oldest first. Each bar has a tooltip with its hour and count."""
    top = nice_ceiling(max((count for _, count in points), default=0))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(points))
    bars = []
    for i, (hour, count) in enumerate(points):
        h = plot_h * count / top
        x = LEFT + i * slot + 1
        label = f"{hour:%H}:00-{(hour.hour + 1) % 24:02d}:00 UTC: {count} message" + (
            "" if count == 1 else "s"
        )
        bars.append(
            (f"{x:.1f}", f"{TOP + plot_h - h:.1f}", f"{max(1.0, slot - 2):.1f}", f"{h:.1f}", label)
        )
    hour_labels = [
        (f"{LEFT + (i + 0.5) * slot:.1f}", HEIGHT - 6, f"{hour:%H}:00")
        for i, (hour, _) in enumerate(points)
        if hour.hour % LABEL_EVERY_HOURS == 0
    ]
    grid = [(TOP + plot_h * (1 - f), f"{round(top * f):,}") for f in (0, 0.5, 1)]
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="hourly-chart" role="img" '
        'width="{w}" height="{h}" viewBox="0 0 {w} {h}" aria-label="{title}">'
        "<title>{title}</title>"
        '<g class="grid" stroke="#ddd" font-size="11" fill="#666" text-anchor="end">{grid}</g>'
        '<g class="bars" fill="#417690">{bars}</g>'
        '<g class="hours" font-size="11" fill="#666" text-anchor="middle">{hours}</g>'
        "</svg>",
        w=WIDTH,
        h=HEIGHT,
        title=title,
        grid=format_html_join(
            "",
            '<line x1="{}" x2="{}" y1="{}" y2="{}"/><text x="{}" y="{}" stroke="none">{}</text>',
            ((LEFT, WIDTH - 4, y, y, LEFT - 6, y + 4, text) for y, text in grid),
        ),
        bars=format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            bars,
        ),
        hours=format_html_join("", '<text x="{}" y="{}">{}</text>', hour_labels),
    )
