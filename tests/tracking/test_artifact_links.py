"""Artifacts never leave their run: a destination that is a link, or passes through one, is
refused or replaced, never written through (log_artifact, log_artifacts, log_text, log_dict,
log_model); absolute and `..` paths are refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import mlkit
from mlkit.errors import InvalidInputError, MlkitError
from mlkit.tracking.store import FileStore

SECRET = "outside: must stay as it is\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store with a file in it, both of which must never change."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "payload.txt").write_text(SECRET)
    (directory / "config.json").write_text(SECRET)
    return directory


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text() if p.is_file() else "<dir>" for p in directory.rglob("*")
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "payload.txt").write_text("new payload\n")
    (src / "config.json").write_text("{}\n")
    (src / "sub" / "payload.txt").write_text("new sub payload\n")
    return src


def _artifacts(run: mlkit.ActiveRun) -> Path:
    return FileStore().artifact_dir(run.info.run_id)


LINKS: dict[str, Callable[[Path, Path], None]] = {
    "file link": lambda art, out: os.symlink(out / "payload.txt", art / "payload.txt"),
    "dangling link": lambda art, out: os.symlink(out / "new.txt", art / "payload.txt"),
    "dir link": lambda art, out: os.symlink(out, art / "sub"),
    "nested dir link": lambda art, out: ((art / "deep").mkdir(), os.symlink(out, art / "deep" / "sub")),
    "config link": lambda art, out: os.symlink(out / "config.json", art / "config.json"),
}

CALLS: dict[str, Callable[[Path], None]] = {
    "log_artifact": lambda src: mlkit.log_artifact(src / "payload.txt"),
    "log_artifact sub": lambda src: mlkit.log_artifact(src / "payload.txt", "sub"),
    "log_artifact deep/sub": lambda src: mlkit.log_artifact(src / "payload.txt", "deep/sub"),
    "log_artifact sub/x": lambda src: mlkit.log_artifact(src / "payload.txt", "sub/x"),
    "log_artifacts": lambda src: mlkit.log_artifacts(src),
    "log_artifacts deep": lambda src: mlkit.log_artifacts(src, "deep"),
    "log_text": lambda src: mlkit.log_text("new", "payload.txt"),
    "log_text sub": lambda src: mlkit.log_text("new", "sub/payload.txt"),
    "log_text sub new": lambda src: mlkit.log_text("new", "sub/new.txt"),
    "log_text deep": lambda src: mlkit.log_text("new", "deep/sub/new.txt"),
    "log_dict": lambda src: mlkit.log_dict({"a": 1}, "config.json"),
    "log_dict sub yaml": lambda src: mlkit.log_dict({"a": 1}, "sub/config.yaml"),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("link", list(LINKS))
def test_writes_never_go_through_links(outside: Path, source: Path, link: str, call: str) -> None:
    before = _snapshot(outside)
    with mlkit.start_run() as run:
        art = _artifacts(run)
        LINKS[link](art, outside)
        try:
            CALLS[call](source)
        except InvalidInputError as exc:
            assert "link" in str(exc) or "outside" in str(exc)
    assert _snapshot(outside) == before
    # whatever is now at a linked name was replaced by a file of the run, or left as the link
    payload = art / "payload.txt"
    if payload.exists() and not payload.is_symlink():
        assert payload.read_text() in ("new payload\n", "new")


@pytest.mark.parametrize("path", ["/etc/x", "../x", "a/../../x", "a/../..", "/"])
def test_absolute_and_dotdot_paths_are_refused(outside: Path, source: Path, path: str) -> None:
    with mlkit.start_run():
        with pytest.raises(InvalidInputError):
            mlkit.log_text("x", path)
        with pytest.raises(InvalidInputError):
            mlkit.log_artifact(source / "payload.txt", path)
        with pytest.raises(InvalidInputError):
            mlkit.log_artifacts(source, path)


def test_plain_artifacts_still_work(source: Path) -> None:
    with mlkit.start_run() as run:
        mlkit.log_artifact(source / "payload.txt")
        mlkit.log_artifact(source / "payload.txt", "a/b")
        mlkit.log_artifacts(source, "tree")
        mlkit.log_text("t", "notes/n.txt")
        mlkit.log_dict({"k": [1, 2]}, "cfg/c.yaml")
        mlkit.log_artifact(source / "payload.txt")  # again: replaced in place
    art = _artifacts(run)
    assert (art / "payload.txt").read_text() == "new payload\n"
    assert (art / "a" / "b" / "payload.txt").read_text() == "new payload\n"
    assert (art / "tree" / "sub" / "payload.txt").read_text() == "new sub payload\n"
    assert (art / "notes" / "n.txt").read_text() == "t"
    assert "k:" in (art / "cfg" / "c.yaml").read_text()
    assert oct((art / "payload.txt").stat().st_mode & 0o777) == oct(
        (source / "payload.txt").stat().st_mode & 0o777
    )
    leftovers = [p for p in art.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    "where, target", [("model", ""), ("models/m", ""), ("model", "gone"), ("m/model", "")]
)
def test_log_model_never_goes_through_links(outside: Path, where: str, target: str) -> None:
    torch = pytest.importorskip("torch")
    from mlkit.models.save import log_model

    before = _snapshot(outside)
    with mlkit.start_run() as run:
        art = _artifacts(run)
        os.symlink(outside / target if target else outside, art / where.split("/")[0])
        with pytest.raises(MlkitError):
            log_model(torch.nn.Linear(2, 1), where, init_args={"in_features": 2, "out_features": 1})
    assert _snapshot(outside) == before
    assert not (outside / "gone").exists()


def test_log_model_still_works() -> None:
    torch = pytest.importorskip("torch")
    from mlkit.models.save import log_model

    with mlkit.start_run() as run:
        info = log_model(torch.nn.Linear(2, 1), "deep/model", init_args={"in_features": 2, "out_features": 1})
    assert (info.path / "MLmodel").is_file()
    assert info.path == _artifacts(run) / "deep" / "model"
