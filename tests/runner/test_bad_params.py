"""Bad `-P` names are refused before anything exists: exit 2, one line, no store, no run."""

from __future__ import annotations

import pytest

PROJECT = {
    "MLproject": """
        name: tiny
        entry_points:
          main:
            parameters:
              lr: {type: float, default: 0.1}
            command: "python train.py --lr {lr}"
    """,
    "train.py": "print('ran')\n",
}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["-P", ".=v"], "cannot be logged"),
        (["-P", "a" * 251 + "=v"], "more than 250"),
        (["-P", "a=1", "-P", "a/b=2"], "'a' and 'a/b' cannot both be logged"),
        (["-P", "lr/x=2"], "'lr' and 'lr/x' cannot both be logged"),  # clashes with a declared name
        (["-P", "a/../b=1"], "cannot be logged"),
        (["-P", "bad\nname=1"], "cannot be logged"),
    ],
)
def test_unloggable_names_create_nothing(make_project, mlkit_run, store_root, tmp_path, params, expected):
    project = make_project(PROJECT)
    before = sorted(p.name for p in tmp_path.iterdir())
    for dry in ((), ("--dry-run",)):
        result = mlkit_run(str(project), *params, *dry)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr
        assert "ran" not in result.stdout
        assert not store_root.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == before
