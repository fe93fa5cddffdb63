"""promote(): the comparison, its direction, stages as targets, and what it records."""

from __future__ import annotations

import pytest

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.models import parse_condition, promote


def test_parse_condition():
    cond = parse_condition("metrics.val/loss <= Production")
    assert (cond.metric, cond.op, cond.reference) == ("val/loss", "<=", "Production")
    assert parse_condition(" metrics.acc>staging ").reference == "Staging"
    for bad in (
        "acc > champion",
        "metrics.acc == champion",
        "metrics.acc > latest",
        "metrics.acc >",
        "metrics. > x",
    ):
        with pytest.raises(InvalidInputError):
            parse_condition(bad)


def test_lower_is_better_to_a_stage_archives_the_previous_holder(model_run, registry):
    old = model_run(metrics={"val_loss": 0.5})
    new = model_run(metrics={"val_loss": 0.3})
    worse = model_run(metrics={"val_loss": 0.9})
    first = promote("gan", from_run=old, if_better="metrics.val_loss < Production")
    assert first.promoted and first.target == "stage Production"
    second = promote("gan", from_run=new, if_better="metrics.val_loss < Production")
    assert second.promoted and (second.version, second.previous, second.holder_value) == (2, 1, 0.5)
    stages = {v.version: v.current_stage for v in registry.list_model_versions("gan")}
    assert stages == {1: "Archived", 2: "Production"}
    kept = promote("gan", from_run=worse, if_better="metrics.val_loss < champion", stage="Production")
    assert not kept.promoted and kept.previous == 2
    again = promote("gan", from_run=new, if_better="metrics.val_loss <= Production")
    assert not again.promoted and "already holds" in again.reason
    last = registry.history("gan")[-1]
    assert last.what == "set_stage" and last.details["condition"] == "metrics.val_loss < Production"


def test_equal_is_not_better_with_strict_operator(model_run):
    a, b = model_run(metrics={"acc": 0.5}), model_run(metrics={"acc": 0.5})
    assert promote("m", from_run=a, if_better="metrics.acc > champion").promoted
    assert not promote("m", from_run=b, if_better="metrics.acc > champion").promoted
    assert promote("m", from_run=b, if_better="metrics.acc >= champion").promoted


def test_errors(model_run):
    run = model_run(metrics={"acc": 0.5})
    bare = model_run(metrics={"acc": 0.9}, with_model=False)
    with pytest.raises(InvalidInputError, match="has no metric 'f1'"):
        promote("m", from_run=run, if_better="metrics.f1 > champion")
    with pytest.raises(NotFoundError, match="no model there"):
        promote("m", from_run=bare, if_better="metrics.acc > champion")
    with pytest.raises(InvalidInputError, match="not both"):
        promote("m", from_run=run, if_better="metrics.acc > champion", alias="a", stage="Production")
    with pytest.raises(NotFoundError):
        promote("m", from_run="ffffffffffffffffffffffffffffffff", if_better="metrics.acc > champion")
