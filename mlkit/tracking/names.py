"""Random run names in MLflow's style: '<adjective>-<noun>-<0..999>'."""

from __future__ import annotations

import os

_ADJECTIVES = (
    "able",
    "bold",
    "brave",
    "bright",
    "calm",
    "clever",
    "crisp",
    "eager",
    "fair",
    "gentle",
    "glad",
    "grand",
    "honest",
    "keen",
    "kind",
    "lively",
    "lucky",
    "merry",
    "neat",
    "nimble",
    "polite",
    "proud",
    "quick",
    "quiet",
    "rare",
    "sharp",
    "shy",
    "silent",
    "smart",
    "steady",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "warm",
    "wise",
    "witty",
    "zesty",
)
_NOUNS = (
    "ant",
    "bass",
    "bear",
    "bee",
    "cat",
    "crab",
    "crow",
    "deer",
    "dove",
    "duck",
    "eel",
    "elk",
    "finch",
    "fox",
    "frog",
    "goat",
    "hare",
    "hawk",
    "ibis",
    "jay",
    "koi",
    "lark",
    "lynx",
    "mole",
    "moth",
    "newt",
    "owl",
    "panda",
    "perch",
    "pike",
    "quail",
    "ram",
    "seal",
    "slug",
    "swan",
    "toad",
    "trout",
    "vole",
    "wasp",
    "wolf",
    "wren",
    "yak",
)


def random_run_name() -> str:
    """A short human-friendly run name, at most 20 characters."""
    return f"{_pick(_ADJECTIVES)}-{_pick(_NOUNS)}-{random_below(1000)}"


def random_below(n: int) -> int:
    """A random int in [0, n) from the OS's random bytes: the `random` module costs ~1.5 ms of
    every `mlkit run` to import (bias below 1e-6 for these sizes)."""
    return int.from_bytes(os.urandom(4), "big") % n


def _pick(words: tuple[str, ...]) -> str:
    return words[random_below(len(words))]
