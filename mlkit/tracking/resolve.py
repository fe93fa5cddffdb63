"""One way to name a run everywhere: its id, a unique id prefix (6+ characters) or a unique name.

    resolve_run(store, "3f9a1c")        # a prefix
    resolve_run(store, "lr0.003-w32")   # a run name

Every command that takes a run goes through `resolve_run`, so they all accept the same things and
fail the same way: NotFoundError when nothing matches, AmbiguousRunError (listing the candidates)
when more than one run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.tracking.validation import validate_run_id

if TYPE_CHECKING:
    from mlkit.tracking.store import FileStore

MIN_PREFIX = 6


def _id_like(ref: str) -> bool:
    """True when `ref` could be (the start of) a run id; names may hold any character."""
    try:
        validate_run_id(ref)
    except InvalidInputError:
        return False
    return True


class AmbiguousRunError(InvalidInputError):
    """A run reference matches more than one run (exit 2, as other bad input)."""


@dataclass(frozen=True)
class Candidate:
    """A run a reference could mean, and how it matched ('id prefix' or 'name')."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    lifecycle_stage: str
    how: str

    def __str__(self) -> str:
        deleted = ", deleted" if self.lifecycle_stage != "active" else ""
        return (
            f"{self.run_id[:12]} ({self.run_name or 'no name'}, {self.status}, "
            f"experiment {self.experiment_id}{deleted})"
        )


def candidates(store: FileStore, ref: str) -> list[Candidate]:
    """Every run whose id starts with `ref` (when it is 6+ id characters) or whose name is `ref`."""
    # imported here: the search index (sqlite3) loads only when a prefix or a name is looked up
    from mlkit.tracking.search import indexed_runs

    as_prefix = len(ref) >= MIN_PREFIX and _id_like(ref)
    found: list[Candidate] = []
    for run in indexed_runs(store, None, attrs={"run_name", "experiment_id", "status"}):
        info = run.info
        name = str(info.get("run_name") or "")
        how = "id prefix" if as_prefix and run.run_id.startswith(ref) else "name" if name == ref else ""
        if how:
            stage = str(info.get("lifecycle_stage") or "active")
            exp = str(info.get("experiment_id") or run.exp_id)
            found.append(Candidate(run.run_id, name, exp, str(info.get("status") or ""), stage, how))
    return sorted(found, key=lambda c: (c.lifecycle_stage != "active", c.run_id))


def resolve_run(store: FileStore, ref: str, *, experiment_id: str | None = None) -> str:
    """The full id of the one run `ref` names: a full id, a unique id prefix or a unique run name
    (of experiment `experiment_id` only, when given).

    A full id always wins. Otherwise prefix and name matches count together: one is the answer,
    none is NotFoundError, several is AmbiguousRunError naming each candidate.
    """
    ref = ref.strip()
    if not ref:
        raise InvalidInputError(
            "empty run reference", hint="give a run id, a unique id prefix or a unique run name"
        )
    if _id_like(ref):
        try:
            run_dir = store.run_dir(ref)  # an exact id
        except NotFoundError:
            pass
        else:
            if experiment_id is None or run_dir.parent.name == experiment_id:
                return ref
    found = [c for c in candidates(store, ref) if experiment_id in (None, c.experiment_id)]
    if len(found) == 1:
        return found[0].run_id
    if not found:
        short = (
            f" (an id prefix needs at least {MIN_PREFIX} characters)"
            if len(ref) < MIN_PREFIX and _id_like(ref)
            else ""
        )
        raise NotFoundError(
            f"no run {ref!r} in {store.root}{short}",
            hint="name a run by its id, a unique id prefix or its name; see `mlkit runs list --all`",
        )
    listed = "; ".join(f"{c} by {c.how}" for c in found[:10])
    more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
    raise AmbiguousRunError(
        f"run {ref!r} matches {len(found)} runs: {listed}{more}",
        hint="give one of these run ids (or a longer prefix of it) instead",
    )


def resolve_runs(store: FileStore, refs: list[str]) -> list[str]:
    """Each reference resolved, in order; all of them before the caller changes anything."""
    return [resolve_run(store, ref) for ref in refs]
