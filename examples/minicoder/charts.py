"""Inline SVG charts, drawn on the server: no JavaScript, no front-end build."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

IN_COLOR = "#3b6fd4"
OUT_COLOR = "#e0822f"


def compact(n: int) -> str:
    """1234 -> '1.2k', 5_600_000 -> '5.6M'."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(n)


def _scale(value: int) -> tuple[int, int]:
    """A round top for the y axis and the step between grid lines: steps of
    1, 2 or 5 times a power of ten, at most five of them."""
    step = 1
    while step * 5 < value:
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step = int(step * factor)
            if step * 5 >= value:
                break
    return max(step * math.ceil(value / step), step), step


def _label(start: int, bucket_seconds: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    return moment.strftime("%m-%d" if bucket_seconds >= 86400 else "%H:%M")


def bar_chart(
    buckets: Sequence[tuple[int, int, int]],
    bucket_seconds: int,
    *,
    title: str,
    width: int = 1100,
    height: int = 260,
) -> str:
    """Tokens in and out per time bucket, as side-by-side bars.

    ``buckets`` holds ``(start, tokens_in, tokens_out)``, oldest first, with
    ``start`` in Unix seconds.
    """
    left, right, top, bottom = 56, 12, 28, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak, grid = _scale(max((max(i, o) for _, i, o in buckets), default=0))
    slot = plot_w / max(len(buckets), 1)
    bar = max(slot * 0.38, 1.0)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for value in range(0, peak + 1, grid):  # horizontal grid lines with their values
        y = top + plot_h - plot_h * value / peak
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="#e3e6ea" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="#667">{compact(value)}</text>'
        )
    label_every = max(1, math.ceil(len(buckets) / 12))
    for n, (start, tokens_in, tokens_out) in enumerate(buckets):
        x = left + n * slot + (slot - 2 * bar) / 2
        tip = escape(
            f"{_label(start, bucket_seconds)} UTC: {tokens_in:,} tokens in, {tokens_out:,} out"
        )
        for offset, value, color in ((0.0, tokens_in, IN_COLOR), (bar, tokens_out, OUT_COLOR)):
            h = plot_h * value / peak
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}"'
                f' height="{h:.1f}" fill="{color}"><title>{tip}</title></rect>'
            )
        if n % label_every == 0:
            parts.append(
                f'<text x="{left + n * slot + slot / 2:.1f}" y="{height - 10}" font-size="11"'
                f' text-anchor="middle" fill="#667">{_label(start, bucket_seconds)}</text>'
            )
    parts.append(
        f'<rect x="{left}" y="6" width="10" height="10" fill="{IN_COLOR}"/>'
        f'<text x="{left + 14}" y="15" font-size="12" fill="#333">tokens in</text>'
        f'<rect x="{left + 90}" y="6" width="10" height="10" fill="{OUT_COLOR}"/>'
        f'<text x="{left + 104}" y="15" font-size="12" fill="#333">tokens out</text>'
        "</svg>"
    )
    return "".join(parts)


def sparkline(
    values: Sequence[tuple[int, int]], *, label: str, width: int = 160, height: int = 30
) -> str:
    """Two small lines (tokens in, tokens out) over the same buckets."""
    peak = max((max(pair) for pair in values), default=0) or 1
    step = width / max(len(values) - 1, 1)

    def line(index: int, color: str) -> str:
        points = " ".join(
            f"{n * step:.1f},{height - 2 - (height - 4) * pair[index] / peak:.1f}"
            for n, pair in enumerate(values)
        )
        return f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>'

    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{line(0, IN_COLOR)}{line(1, OUT_COLOR)}</svg>"
    )


COST_COLOR = "#2f9e5b"


def cost_chart(
    buckets: Sequence[tuple[int, int]],
    bucket_seconds: int,
    *,
    title: str,
    width: int = 1100,
    height: int = 200,
) -> str:
    """Cost per time bucket, as bars. ``buckets`` holds ``(start, amount in
    10^-12 USD)``, oldest first; the axis is in dollars."""
    left, right, top, bottom = 64, 12, 16, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    # the scale in hundredths of a cent, so that small costs still get bars
    units = [(start, math.ceil(pico / 10**8)) for start, pico in buckets]
    peak, grid = _scale(max((u for _, u in units), default=0))
    slot = plot_w / max(len(units), 1)
    bar = max(slot * 0.6, 1.0)
    parts = [
        f'<svg class="chart cost" xmlns="http://www.w3.org/2000/svg"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f' aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for value in range(0, peak + 1, grid):
        y = top + plot_h - plot_h * value / peak
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="#e3e6ea" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="#667">${value / 10**4:.4f}</text>'
        )
    label_every = max(1, math.ceil(len(units) / 12))
    for n, ((start, value), (_, pico)) in enumerate(zip(units, buckets, strict=True)):
        x = left + n * slot + (slot - bar) / 2
        h = plot_h * value / peak
        dollars = f"${pico / 10**12:.6f}"
        tip = escape(f"{_label(start, bucket_seconds)} UTC: {dollars}")
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}"'
            f' fill="{COST_COLOR}"><title>{tip}</title></rect>'
        )
        if n % label_every == 0:
            parts.append(
                f'<text x="{left + n * slot + slot / 2:.1f}" y="{height - 10}" font-size="11"'
                f' text-anchor="middle" fill="#667">{_label(start, bucket_seconds)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
