from __future__ import annotations

import math

import pytest

from mlkit.errors import UsageError
from mlkit.units import parse_age, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20GiB", 20 * 1024**3),
        ("20G", 20 * 1024**3),
        ("20gb", 20 * 10**9),
        ("512MiB", 512 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("1024", 1024),
        (" 3 MB ", 3 * 10**6),
        (4096, 4096),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "20 parsecs", "-1G", "1e3", "twenty"])
def test_parse_memory_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_memory(text)
    assert "--min-free-memory" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2h", 7200.0), ("30m", 1800.0), ("45s", 45.0), ("90", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0),
     ("1d", 86400.0), ("0", 0.0), (12, 12.0)],
)  # fmt: skip
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


def test_parse_duration_forever():
    assert math.isinf(parse_duration("inf"))
    assert math.isinf(parse_duration("forever"))


@pytest.mark.parametrize("text", ["", "h", "2 weeks", "-5", "1h-", "5x"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_duration(text)
    assert "--wait" in info.value.message


@pytest.mark.parametrize(
    "text,seconds", [("30d", 30 * 86400), ("1d12h", 129600), ("2w", 1209600), ("0", 0.0)]
)
def test_parse_age_takes_durations_with_units_and_zero(text, seconds):
    from mlkit.units import parse_age

    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["30", "1.5", "", "inf", "soon", "30 days"])
def test_parse_age_refuses_bare_numbers_and_junk(text):
    from mlkit.errors import UsageError
    from mlkit.units import parse_age

    with pytest.raises(UsageError, match="not an age"):
        parse_age(text, flag="--older-than")


@pytest.mark.parametrize("text", ["1.5.5h", "1 2h", "2h 30", "1h30", "30m1", "1.2.3", "1..5h"])
def test_parse_duration_refuses_a_bare_number_among_parts(text):
    """A number without a unit is seconds only when it is the whole value: `1.5.5h` used to read as
    1.5 s + 0.5 h, and `gc --older-than 1.5.5d` as 12 hours."""
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)
    with pytest.raises(UsageError):
        parse_age(text)


@pytest.mark.parametrize(("text", "expected"), [("1h 30m", 5400.0), (" 2h ", 7200.0), ("1d12h", 129600.0)])
def test_parse_duration_still_takes_parts_with_units(text, expected):
    assert parse_duration(text) == expected
