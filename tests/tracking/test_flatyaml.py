"""The meta.yaml fast path gives exactly what PyYAML gives, or steps aside."""

from __future__ import annotations

import pytest
import yaml

from mlkit.tracking.files import dump_yaml, load_yaml_text
from mlkit.tracking.flatyaml import parse_flat
from mlkit.tracking.store import FileStore

ORDINARY = ["run-1", "0a1b2c3d", "001a90f9577740d680a4eaeb949aecd1", "file:///tmp/mlruns/0/x/artifacts", "",
            "it's", "a b c", "ünïcode", "root", 7, 0, 1795364421951, None, [], {}]  # fmt: skip
TRICKY = ["0123", "1e5", "1.5e3", "0x1f", "0o17", "0b101", "1_000", "1:20", "true", "yes", "No", "on", "null",
          "~", "2024-01-01", "2024-01-01 10:00:00", "a: b", "a #b", "-x", "- x", "'quoted'", "\"dq\"", " lead",
          "trail ", "x\ny", "tab\tx", "=", ".inf", ".nan", "12345678901234567890", "-3", "+3", "?", "[x]",
          "{x}", "&a", "*a", "!t", "%p", "@x", "`x`", "|", ">", "#c", -3, 1.5, True, False, ["a"],
          {"a": 1}, "a\r", "\u2028", "\x85", "''", "a''b"]  # fmt: skip


@pytest.mark.parametrize("value", ORDINARY + TRICKY, ids=repr)
def test_the_fast_path_agrees_with_pyyaml_or_steps_aside(value):
    text = dump_yaml({"experiment_id": "0", "value": value, "status": 3})
    fast = parse_flat(text)
    assert fast is None or fast == yaml.safe_load(text)
    assert load_yaml_text(text) == yaml.safe_load(text)
    if any(type(value) is type(v) and value == v for v in ORDINARY):
        assert fast is not None, text  # what a store holds takes the fast path


@pytest.mark.parametrize(
    "text",
    [
        "k: v\n  continued\n",
        "- a\n",
        "k: v # comment\n",
        "k: 'open\n",
        "k: v\nk: w\n",
        "---\nk: v\n",
        "",
        "k: a: b\n",
    ],
)
def test_shapes_it_does_not_read_are_left_to_pyyaml(text):
    assert parse_flat(text) is None


def test_a_run_and_an_experiment_as_the_store_writes_them(store_root):
    store = FileStore(store_root)
    run = store.create_run("0", run_name="try: 1 #2")
    store.set_terminated(run.info.run_id, "FAILED")
    for meta in (store_root / "0" / run.info.run_id / "meta.yaml", store_root / "0" / "meta.yaml"):
        text = meta.read_text()
        assert load_yaml_text(text) == yaml.safe_load(text)
    assert parse_flat((store_root / "0" / "meta.yaml").read_text()) is not None
    assert store.get_run(run.info.run_id).info.run_name == "try: 1 #2"


def test_random_strings_agree_with_pyyaml():
    import random

    rng = random.Random(0)
    alphabet = "ab01289 _-.:#'\"/\\=~!?&*%@`[]{},|>\t\n\r\x85\u2028é中"
    taken = 0
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        text = dump_yaml({"k": value})
        fast = parse_flat(text)
        if fast is not None:
            taken += 1
            assert fast == yaml.safe_load(text), (value, text)
    assert taken > 300  # the fast path is exercised, not just stepped around
