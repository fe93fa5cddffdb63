"""Arguments mlkit cannot honour are refused, in one line and before anything is created: an
argument that is not UTF-8 (a Latin-1 terminal, a file name from an old disk: the store records
text as UTF-8, as MLflow's does), an empty --store (an unset variable), a file:// store on
another host. Never a traceback, never a FAILED run or a stray mlruns/ left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_mlkit

LATIN1 = "caf\udce9"  # the bytes b"caf\xe9" as Python holds an undecodable argument


@pytest.mark.parametrize(
    "extra",
    [["-P", f"x={LATIN1}"], ["--run-name", LATIN1], ["--experiment-name", LATIN1]],
    ids=["param", "run-name", "experiment-name"],
)
def test_a_run_with_an_argument_that_is_not_utf8_creates_nothing(tmp_path: Path, extra: list[str]) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: p\nentry_points:\n  main:\n    parameters: {x: {default: a}}\n    command: python -c pass\n"
    )
    store = tmp_path / "mlruns"
    done = run_mlkit(
        "run", str(project), "--env-manager", "local", "--gpus", "none", "--store", str(store), *extra
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    first = done.stderr.splitlines()[0]
    assert "not UTF-8" in first and "caf\\xe9" in first, done.stderr
    assert not store.exists()


def test_other_commands_refuse_it_too(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    for args in (
        ["models", "tag", "m1", "k", LATIN1],
        ["runs", "list", "--filter", f"params.x = '{LATIN1}'"],
    ):
        done = run_mlkit(*args, "--store", str(store))
        assert done.returncode == 2 and "not UTF-8" in done.stderr and "Traceback" not in done.stderr, (
            done.stderr
        )
    assert not store.exists()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("", "the store path is empty"),
        ("file://otherhost{tmp}/elsewhere", "names a store on host 'otherhost'"),
    ],
    ids=["empty", "other-host"],
)
def test_a_store_path_that_names_no_local_directory_is_refused(
    tmp_path: Path, store: str, message: str
) -> None:
    """`--store "$STORE"` with STORE unset used to write ./mlruns wherever cron started; a
    file:// URI with a host used to drop the host and write the path here. Both: exit 2, nothing."""
    store = store.format(tmp=tmp_path)  # a host's path that exists here too: nothing may be made at it
    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: python -c pass\n")
    for args in (
        ["run", str(project), "--env-manager", "local", "--gpus", "none", "--store", store],
        ["runs", "list", "--store", store],
        ["sweep", str(project), "-P", "x=0,1", "--gpus-per-trial", "0", "--store", store],
    ):
        done = run_mlkit(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
