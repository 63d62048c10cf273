"""Markdown table and number formatting shared by the evaluate and compare reports and the demo."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

# Digits shown for Dice/IoU and rates in reports (metrics.json keeps full precision).
SCORE_DIGITS = 4
# Volumes in ml or pixels: three significant decimals are below any annotation's precision.
VOLUME_DIGITS = 3
NOT_AVAILABLE = "n/a"


def number(value: float | None, digits: int = SCORE_DIGITS) -> str:
    """An undefined value (None, or NaN from an older file) reads n/a, never 'nan'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_AVAILABLE
    return f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, digits: int = SCORE_DIGITS) -> str:
    if mean is None:
        return NOT_AVAILABLE
    return number(mean, digits) if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def rate(value: float | None, hits: int, total: int) -> str:
    """'0.2500 (1/4)': the share and the counts behind it."""
    return f"{number(value)} ({hits}/{total})"


def rate_ci(value: float | None, hits: int, total: int, interval: Sequence[float] | None) -> str:
    """'0.2500 (1/4) [0.0063, 0.8059]': the share, its counts and its confidence interval."""
    text = rate(value, hits, total)
    return text if interval is None else f"{text} [{number(interval[0])}, {number(interval[1])}]"


def p_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return NOT_AVAILABLE
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def signed(value: float | None) -> str:
    """A difference with its sign: '+0.0123'."""
    return number(value) if value is None else f"{value:+.{SCORE_DIGITS}f}"


def interval(low: float | None, high: float | None) -> str:
    """A confidence interval of a difference: '[-0.0100, +0.0300]'."""
    return NOT_AVAILABLE if low is None or high is None else f"[{signed(low)}, {signed(high)}]"


def sign_flip(entry: Mapping[str, Any]) -> str:
    """The sign-flip p of a run-level entry with its method: exact, or Monte-Carlo ± its standard error."""
    if entry.get("sign_flip_p") is None:
        return NOT_AVAILABLE
    if entry.get("sign_flip_method") == "monte-carlo":
        return f"{p_value(entry['sign_flip_p'])} ± {number(entry['sign_flip_mc_se'])} (MC)"
    return p_value(entry["sign_flip_p"])


def mean_sd(spread: Mapping[str, Any]) -> str:
    """A value's spread over runs (:func:`~pu_nnunet.evaluation.metrics.run_stats.spread`) as mean ± sd."""
    return mean_std(spread.get("mean"), spread.get("sd"))


def _reads_as_number(text: str) -> bool:
    return text in ("", NOT_AVAILABLE) or text.lstrip("+-")[:1].isdigit()


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table, padded so that it reads as plain text too (the demo
    prints it): columns of numbers right-aligned, others left; cells str()-ed, '|' escaped."""
    cells = [[str(value).replace("|", "\\|") for value in row] for row in [header, *rows]]
    columns = list(zip(*cells))
    widths = [max(map(len, column)) for column in columns]
    right = [len(rows) > 0 and all(map(_reads_as_number, column[1:])) for column in columns]
    line = lambda row: "| " + " | ".join(text.rjust(width) if is_right else text.ljust(width)
                                         for text, width, is_right in zip(row, widths, right)) + " |"
    rule = "|" + "|".join("-" * (width + 1) + ":" if is_right else ":" + "-" * (width + 1)
                          for width, is_right in zip(widths, right)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])
