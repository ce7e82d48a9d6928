"""Inline SVG charts for the dashboard: no JavaScript, no CDN (Airflow machines are often offline)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD = 520, 180, 56, 28, 12


def _scale(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        spread = abs(high) * 0.05 or 1.0
        low, high = low - spread, high + spread
    return low, high


def line_chart(points: list[tuple[str, float]], title: str, highlight: str | None = None) -> str:
    """A line chart of ``(label, value)`` points; the point labelled ``highlight`` is drawn larger.

    :return: an ``<svg>`` element, or a short note when there is nothing to draw.
    """
    points = [(label, float(v)) for label, v in points if v is not None]
    if not points:
        return f'<p class="muted">{escape(title)}: no data yet</p>'
    low, high = _scale([v for _, v in points])
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD, HEIGHT - PAD_BOTTOM - PAD
    step = inner_w / max(len(points) - 1, 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return PAD_LEFT + i * step, PAD + inner_h * (1 - (value - low) / (high - low))

    coords = [xy(i, v) for i, (_, v) in enumerate(points)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{6 if label == highlight else 3.5}" '
        f'class="{"dot champion" if label == highlight else "dot"}"><title>{escape(label)}: {v:.4f}</title></circle>'
        f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{escape(label)}</text>'
        for (x, y), (label, v) in zip(coords, points, strict=True)
    )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f"<title>{escape(title)}</title>"
        f'<text x="4" y="{PAD + 4}" class="axis">{high:.4g}</text>'
        f'<text x="4" y="{PAD + inner_h}" class="axis">{low:.4g}</text>'
        f'<line x1="{PAD_LEFT}" y1="{PAD + inner_h}" x2="{WIDTH - PAD}" y2="{PAD + inner_h}" class="grid"/>'
        f'<polyline points="{path}" class="line"/>{dots}</svg>'
    )


def bar_chart(bars: list[tuple[str, float]], title: str, unit: str = "$") -> str:
    """A bar chart of ``(label, value)`` (e.g. USD per week); zero-based."""
    bars = [(label, float(v or 0.0)) for label, v in bars]
    if not bars:
        return f'<p class="muted">{escape(title)}: no data yet</p>'
    high = max(v for _, v in bars) or 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD, HEIGHT - PAD_BOTTOM - PAD
    width = inner_w / len(bars)
    rects = "".join(
        f'<rect x="{PAD_LEFT + i * width + 2:.1f}" y="{PAD + inner_h * (1 - v / high):.1f}" width="{max(width - 4, 1):.1f}" '
        f'height="{inner_h * v / high:.1f}" class="bar"><title>{escape(label)}: {unit}{v:.4f}</title></rect>'
        f'<text x="{PAD_LEFT + (i + 0.5) * width:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{escape(label)}</text>'
        for i, (label, v) in enumerate(bars)
    )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f"<title>{escape(title)}</title>"
        f'<text x="4" y="{PAD + 4}" class="axis">{unit}{high:.4g}</text>'
        f'<line x1="{PAD_LEFT}" y1="{PAD + inner_h}" x2="{WIDTH - PAD}" y2="{PAD + inner_h}" class="grid"/>{rects}</svg>'
    )
