"""Pure pieces: gc's keep rules and durations, and the terminal line chart."""

from __future__ import annotations

import math

import pytest

from mlkit.errors import UsageError
from mlkit.report.termchart import Series, render_chart
from mlkit.tracking.gc import parse_duration
from mlkit.tracking.retention import Candidate, RetentionPolicy, select_retention
from mlkit.units import format_duration

DAY = 86_400_000
NOW = 1_000 * DAY


def runs(*specs: tuple[str, int, float | None]) -> list[Candidate]:
    """(id, days ago it started and ended, metric) -> candidates."""
    return [Candidate(rid, NOW - ago * DAY, NOW - ago * DAY + 1000, metric) for rid, ago, metric in specs]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("1d12h", 129600),
        ("90m", 5400),
        ("1.5h", 5400),
        ("2w", 1209600),
        ("45s", 45),
    ],
)
def test_parse_duration(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30 days", "d", "1x", "-3d", "3d-"])
def test_parse_duration_rejects(text: str):
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (45, 5400, 86400 * 30, 86400 * 14, 90)] == [
        "45s",
        "1.5h",
        "30d",
        "14d",
        "1.5m",
    ]


def test_a_run_is_kept_if_any_rule_keeps_it():
    cands = runs(("a", 100, 0.5), ("b", 50, 0.1), ("c", 40, 0.9), ("d", 10, 0.8), ("e", 1, None))
    policy = RetentionPolicy(older_than=30 * 86400, keep_last=1, keep_best=1, metric="loss", mode="min")
    removed, kept = select_retention(cands, policy, NOW)
    assert set(removed) == {"a", "c"}
    assert kept == {
        "b": "among the best 1 by loss",
        "d": "ended within 30d",
        "e": "among the last 1; ended within 30d",
    }
    assert removed["a"] == "ended 100d ago (limit 30d); not among the last 1; not among the best 1 by loss"


def test_each_rule_alone():
    cands = runs(("a", 100, 0.5), ("b", 50, 0.1), ("c", 40, math.nan), ("d", 10, 0.8))
    assert set(select_retention(cands, RetentionPolicy(keep_last=2), NOW)[0]) == {"a", "b"}
    assert set(select_retention(cands, RetentionPolicy(older_than=45 * 86400), NOW)[0]) == {"a", "b"}
    best_max = RetentionPolicy(keep_best=2, metric="loss", mode="max")
    removed, _ = select_retention(cands, best_max, NOW)
    assert set(removed) == {"b", "c"} and removed["c"] == "no loss value"  # NaN is never "best"
    assert select_retention(cands, RetentionPolicy(), NOW) == (
        {},
        {r.run_id: "no retention rule" for r in cands},
    )
    assert set(select_retention(cands, RetentionPolicy(keep_last=0), NOW)[0]) == {"a", "b", "c", "d"}


def test_policy_says_its_rule_in_words():
    policy = RetentionPolicy(older_than=30 * 86400, keep_last=20, keep_best=5, metric="val_loss", mode="min")
    assert policy.describe() == (
        "an ended run (FINISHED/FAILED/KILLED) is kept if it is among the last 20 by start time, "
        "or it is among the best 5 by val_loss (min), or it ended less than 30d ago"
    )
    assert not RetentionPolicy().active and RetentionPolicy(keep_last=0).active


def test_marker_chart_plain_text():
    up = Series("up", [(x, x * 2.0) for x in range(11)])
    down = Series("down", [(x, 20 - x * 2.0) for x in range(0, 11, 2)])
    chart = render_chart([up, down], width=21, height=11, title="loss")
    text = chart.plain().splitlines()
    assert text[0] == "loss"
    assert text[1].startswith("20 +") and text[11].startswith(" 0 +") and text[6].startswith("10 +")
    grid = [line[4:] for line in text[1:12]]
    assert grid[0][0] == "o" and grid[0][-1] == "*"  # down starts top-left, up ends top-right
    assert grid[-1][0] == "*" and grid[-1][-1] == "o"
    assert grid[5][10] in "*o"  # they cross in the middle
    assert text[12] == "   +" + "-" * 21
    assert text[13].split() == ["0", "10", "(step)"]
    assert text[14].split() == ["*", "up", "o", "down"]
    assert chart.drawn == 2 and chart.y_range == (0.0, 20.0)


def test_braille_chart_marks_each_series_for_colouring():
    chart = render_chart(
        [Series("a", [(0, 0), (10, 1)]), Series("b", [(0, 1), (10, 0)])], width=10, height=4, braille=True
    )
    plot = chart.lines[:4]
    owners = {index for line in plot for _, index in line if index is not None}
    assert owners == {0, 1}
    chars = "".join(text for line in plot for text, index in line if index is not None)
    assert chars and all(0x2800 < ord(c) <= 0x28FF for c in chars)
    assert "┤" in chart.plain() and "└" in chart.plain()
    legend = chart.lines[-1]
    assert [index for _, index in legend if index is not None] == [0, 1]


def test_chart_skips_nan_and_handles_single_points_and_nothing():
    chart = render_chart(
        [Series("a", [(0, math.nan), (1, 5.0), (2, math.inf)]), Series("empty", [])], width=10, height=3
    )
    text = chart.plain()
    assert chart.drawn == 1 and text.count("*") == 2  # the one point and its legend marker
    assert "empty (no values)" in text
    assert "no finite values" in render_chart([Series("a", [(0, math.nan)])]).plain()
