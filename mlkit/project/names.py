"""Did-you-mean for an MLproject's names: a key, a type or a parameter name that is a close
misspelling of a known one. Used by the loader (keys, types) and the resolver (`-P` names)."""

from __future__ import annotations


def _distance(a: str, b: str) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            row.append(cost)
        prev2, prev = prev, row
    return prev[-1]


def typo_of(word: str, known: tuple[str, ...] | list[str]) -> str | None:
    """The known key `word` is a close misspelling of (case, `-` for `_`, one or two letters off,
    a truncation such as `conda` for `conda_env`), or None when it is simply another word."""
    w = word.lower().replace("-", "_").replace(" ", "_")
    for key in known:
        if w == key or (len(w) >= 4 and key.startswith(w)) or (len(key) >= 4 and w.startswith(key)):
            return key
    best = min(known, key=lambda k: _distance(w, k))
    return best if _distance(w, best) <= (1 if len(best) <= 4 else 2) else None
