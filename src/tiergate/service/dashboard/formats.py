"""Human units for the first, server-rendered view (dashboard.js has the same formatters)."""

from __future__ import annotations

import time
from typing import Any

from markupsafe import Markup, escape

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt(value: Any, kind: str, row: dict[str, Any] | None = None) -> str | Markup:
    if kind == "cancel":
        if row and row.get("state") in ("queued", "running", "pending"):
            return Markup('<button class="cancel" data-job="{}">Cancel</button>').format(row.get("id"))
        return ""
    if value is None or value == "":
        return "—"
    if kind == "text":
        return str(value)
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return f"{round(value):,}"
    if kind == "pct":
        return f"{value * 100:.1f}%" if value >= 0.001 or value == 0 else f"{value * 100:.2f}%"
    if kind == "thr":
        return f"{value:.3f}"
    if kind == "bytes":
        v, unit = float(value), 0
        while abs(v) >= 1024 and unit < len(_UNITS) - 1:
            v, unit = v / 1024, unit + 1
        return f"{v:.0f} {_UNITS[unit]}" if unit == 0 else f"{v:.1f} {_UNITS[unit]}"
    if kind == "secs":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if kind == "dur":
        v = float(value)
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
            if v >= size:
                return f"{v / size:.0f} {unit}"
        return f"{v:.0f} s"
    if kind == "age":
        return fmt(max(0.0, time.time() - float(value)), "dur") + " ago"
    if kind == "cost":
        return f"{value:,.4f}"
    if kind == "bar":
        pct = max(0.0, min(1.0, float(value))) * 100
        # <progress>, not a styled span: the page's CSP forbids inline style attributes.
        return Markup('<progress max="100" value="{:.0f}"></progress> {:.0f}%').format(pct, pct)
    return f"{value:,.3g}" if isinstance(value, float) else escape(str(value))
