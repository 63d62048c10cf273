"""Markdown table and number formatting shared by the evaluate and compare reports."""

from __future__ import annotations

from typing import Any, Sequence

# Digits shown for Dice/IoU and rates in reports (metrics.json keeps full precision).
SCORE_DIGITS = 4
# Volumes in ml or pixels: three significant decimals are below any annotation's precision.
VOLUME_DIGITS = 3
NOT_AVAILABLE = "n/a"


def number(value: float | None, digits: int = SCORE_DIGITS) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, digits: int = SCORE_DIGITS) -> str:
    if mean is None:
        return NOT_AVAILABLE
    return number(mean, digits) if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def rate(value: float | None, hits: int, total: int) -> str:
    """'0.2500 (1/4)': the share and the counts behind it."""
    return f"{number(value)} ({hits}/{total})"


def p_value(value: float | None) -> str:
    if value is None:
        return NOT_AVAILABLE
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are str()-ed, '|' escaped."""
    cell = lambda value: str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
