"""Inline SVG charts for the dashboard: no JavaScript, no CDN (Airflow machines are often offline).

Axes use "nice" ticks (steps of 1, 2 or 5 x 10^k: 0.80 / 0.82 / 0.84, never 0.7962), and a chart with
nothing to show is replaced by one line saying so (an all-zero cost series is "$0 every week", not a "$1" axis).
"""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD = 440, 150, 52, 24, 10


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (the first <= low, the last >= high)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks of a non-finite range {low}..{high}")
    if high < low:
        low, high = high, low
    if high == low:
        spread = abs(high) * 0.05 or 1.0
        low, high = low - spread, high + spread
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-12 * max(1.0, abs(high)):
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _decimals(ticks: list[float]) -> int:
    """Digits after the point that tell the ticks apart (0.80, 0.85 -> 2; 1, 2 -> 0)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return max(0, -math.floor(math.log10(step) + 1e-9))


def _axis(ticks: list[float], y_of, unit: str = "") -> str:
    digits = _decimals(ticks)
    return "".join(
        f'<line x1="{PAD_LEFT}" y1="{y_of(t):.1f}" x2="{WIDTH - PAD}" y2="{y_of(t):.1f}" class="grid"/>'
        f'<text x="{PAD_LEFT - 4}" y="{y_of(t) + 3:.1f}" text-anchor="end" class="axis">{unit}{t:.{digits}f}</text>'
        for t in ticks
    )


def line_chart(points: list[tuple[str, float]], title: str, highlight: str | None = None) -> str:
    """A line chart of ``(label, value)`` points; the point labelled ``highlight`` is drawn larger.

    :return: an ``<svg>`` element, or a short note when there is nothing to draw.
    """
    points = [(label, float(v)) for label, v in points if v is not None and math.isfinite(float(v))]
    if not points:
        return f'<p class="muted">{escape(title)}: no data yet</p>'
    ticks = nice_ticks(min(v for _, v in points), max(v for _, v in points))
    low, high = ticks[0], ticks[-1]
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD, HEIGHT - PAD_BOTTOM - PAD
    step = inner_w / max(len(points) - 1, 1)
    every = max(1, math.ceil(len(points) / 12))  # at most ~12 x labels: readable, never overlapping

    def y_of(value: float) -> float:
        return PAD + inner_h * (1 - (value - low) / (high - low))

    coords = [(PAD_LEFT + i * step, y_of(v)) for i, (_, v) in enumerate(points)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{6 if label == highlight else 3.5}" '
        f'class="{"dot champion" if label == highlight else "dot"}"><title>{escape(label)}: {v:.4f}</title></circle>'
        + (f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{escape(label)}</text>'
           if i % every == 0 or label == highlight else "")
        for i, ((x, y), (label, v)) in enumerate(zip(coords, points, strict=True))
    )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f"<title>{escape(title)}</title>{_axis(ticks, y_of)}"
        f'<polyline points="{path}" class="line"/>{dots}</svg>'
    )


def bar_chart(bars: list[tuple[str, float]], title: str, unit: str = "$") -> str:
    """A bar chart of ``(label, value)`` (e.g. USD per week); zero-based, or one line when every value is 0."""
    bars = [(label, float(v or 0.0)) for label, v in bars]
    if not bars:
        return f'<p class="muted">{escape(title)}: no data yet</p>'
    if not any(v for _, v in bars):
        return f'<p class="muted">{escape(title)}: {unit}0 in each of {len(bars)} week(s): nothing billed</p>'
    ticks = nice_ticks(0.0, max(v for _, v in bars))
    high = ticks[-1]
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD, HEIGHT - PAD_BOTTOM - PAD
    width = inner_w / len(bars)

    def y_of(value: float) -> float:
        return PAD + inner_h * (1 - value / high)

    rects = "".join(
        f'<rect x="{PAD_LEFT + i * width + 2:.1f}" y="{y_of(v):.1f}" width="{max(width - 4, 1):.1f}" '
        f'height="{inner_h * v / high:.1f}" class="bar"><title>{escape(label)}: {unit}{v:.4f}</title></rect>'
        f'<text x="{PAD_LEFT + (i + 0.5) * width:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{escape(label)}</text>'
        for i, (label, v) in enumerate(bars)
    )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f"<title>{escape(title)}</title>{_axis(ticks, y_of, unit)}{rects}</svg>"
    )
