"""The yaml-free fast paths (mlkit.yamlscalar, mlkit.yamlfast, flatyaml) against PyYAML itself.

Each check is differential: the fast result equals PyYAML's (type and value, NaN as NaN, key
order included), or the fast path declined and PyYAML runs as before. Where PyYAML fails, the fast
path must decline (so the error a user sees is PyYAML's, unchanged). Issue 20.
"""

from __future__ import annotations

import ast
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlkit import yamlfast, yamlsafe
from mlkit.errors import ProjectError
from mlkit.tracking.files import dump_yaml
from mlkit.tracking.flatyaml import parse_flat
from mlkit.yamlscalar import NOT_HANDLED, plain_value, resolve

ROOT = Path(__file__).resolve().parents[1]
C_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
C_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
BUILT = (str, int, float, bool, type(None))


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, NaN equal to NaN, -0.0 apart from 0.0, dict order counted."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def pyyaml(text: str, loader: Any = C_LOADER) -> tuple[bool, Any]:
    """(True, PyYAML's document) or (False, None) when PyYAML refuses the text."""
    try:
        return True, yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except Exception:  # YAMLError, or the ValueError SafeConstructor raises on `0b_`
        return False, None


# --- plain scalars -----------------------------------------------------------------------------

EDGE_SCALARS = [
    *"yes Yes YES yEs no No NO nO y n Y N true True TRUE tRue false False FALSE on On ON oN off Off OFF".split(),
    *"~ null Null NULL nULL 0 00 007 08 09 0o17 0O17 0x1F 0x_1f 0X1F 0xg 0b101 0b 0b_ 0x 0x_ 0b2 -0b1 +0x1f".split(),
    *"1_000 1__0 _1 1_ 1:20 1:60 1:5:59 -1:20 0:20 01:20 190:20:30 1:20.5 190:20:30.15 1:2_0 .5 5. -.5 +.5".split(),
    *"._5 ._ 1e3 1E3 1e+3 1.0e+3 1.0e3 1.0E-3 1._e+3 1.e+3 .5e+3 +1.5 -1.5 1.5.5 .inf .Inf .INF -.inf +.inf".split(),
    *".iNf .nan .NaN .NAN -.nan +.nan .nAn 2001-12-14 2001-12-14t21:59:43.10-05:00 2001-1-1 2001-12-14T21:59:43Z".split(),
    *"= << < <<< ! & * !! - + . .. -0 +0 -0.0 0. 0_ 00_ -_1 +_ 0x_ 12345678901234567890123 0777 0778 1:2:3:4".split(),
    *"python=3.11 conda-forge pip>=21 file:///tmp/x/0/abc/artifacts 5a49ace28c20401281e9304a7a59b2ad 1e10 3e".split(),
    "2001-12-14 21:59:43.10 -5", "2001-12-14 21:59:43.10", "", " ", "yes\n", "1\n", "1.5\n", "a\n", "~\n", "1 ",
    "١٢٣", "é", "٣.٥", "1٣", "ｙｅｓ", "١:٢٠", "0x١", "True\n\n", "nul", "null ", "1,000", "1e", "0x1F\n",
]  # fmt: skip


def generated_scalars(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "0123456789_:.+-eExXbBoOaAfFiInNlLuUsStTyY~<=! \tZ\n٣é"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(count)]


SCALARS = EDGE_SCALARS + generated_scalars(20000)


def test_the_resolver_and_constructor_give_what_pyyaml_gives():
    resolver = yaml.resolver.Resolver()
    constructor = yaml.SafeLoader("")
    handled = 0
    for text in SCALARS:
        tag = resolver.resolve(yaml.ScalarNode, text, (True, False))
        assert resolve(text) == tag, text
        try:
            expected, ok = constructor.construct_object(yaml.ScalarNode(tag, text), deep=True), True
        except Exception:
            expected, ok = None, False
        fast = plain_value(text)
        if fast is NOT_HANDLED:  # declined only where PyYAML fails or builds something else
            assert not ok or not isinstance(expected, BUILT), (text, expected)
        else:
            handled += 1
            assert ok and same(fast, expected), (text, fast, expected)
    assert handled > len(SCALARS) * 0.9


def test_the_meta_yaml_reader_gives_what_pyyaml_gives():
    taken = 0
    for value in SCALARS:
        for text in (f"k: {value}\n", f"{value}: 1\n", f"k: '{value}'\n"):
            fast = parse_flat(text)
            if fast is not None:
                taken += 1
                ok, expected = pyyaml(text)
                assert ok and same(fast, expected), (text, fast, expected)
    assert taken > 15000


@pytest.mark.parametrize(
    "text", ["true: 1\n", "on: x\n", "null: 1\n", "a: b\x01\n", "a: b\x9f\n", "a: \ud800\n"]
)
def test_the_meta_yaml_reader_leaves_what_it_used_to_misread(text):
    """flatyaml took `true:` for the string key 'true' (PyYAML: the bool True) and read control
    characters or a lone surrogate, which PyYAML refuses."""
    assert parse_flat(text) is None


# --- documents ---------------------------------------------------------------------------------

MARKERS = ("entry_points", "dependencies:", "channels:", "command:", "python:", "build_dependencies")


def corpus() -> list[tuple[str, str]]:
    """Every MLproject, conda.yaml and python_env.yaml of the repository, and every such text in
    the tests' string literals (also dedented, as the tests use them)."""
    found = []
    for path in sorted(ROOT.glob("**/*")):
        if ".git" in path.parts or not path.is_file():
            continue
        if path.name.startswith("MLproject") or (
            path.suffix in (".yaml", ".yml") and ("conda" in path.name or "python_env" in path.name)
        ):
            found.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
    for path in sorted((ROOT / "tests").glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(marker in node.value for marker in MARKERS):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.append((where, node.value))
                    found.append((where + " dedented", textwrap.dedent(node.value).lstrip("\n")))
    return found


def check_document(text: str) -> bool:
    """The fast reader agrees with PyYAML's C and pure-Python loaders, or declines; True if it read it."""
    try:
        fast = yamlfast.read(text)  # `load` without the net that turns a slip into "declined"
    except yamlfast._Unsure:
        return False
    for loader in (C_LOADER, yaml.SafeLoader):
        ok, expected = pyyaml(text, loader)
        assert ok and same(fast, expected), (text, fast, expected, loader)
    return True


def test_every_mlproject_and_conda_file_of_the_repository_and_tests():
    texts = corpus()
    read = {name for name, text in texts if check_document(text)}
    assert len(texts) > 200 and len(read) > 150, (len(texts), len(read))
    bundled = [
        p for p in ROOT.glob("projects/*/*") if p.name in ("MLproject", "conda.yaml", "python_env.yaml")
    ]
    assert len(bundled) >= 3
    for path in bundled:  # `mlkit run projects/cnn` takes the fast path
        assert str(path.relative_to(ROOT)) in read, path


def test_yamlsafe_returns_the_same_result_or_error_with_and_without_the_fast_path(monkeypatch):
    fast_load = yamlfast.load
    for name, text in corpus():
        outcomes = []
        for reader in (fast_load, lambda text: None):
            monkeypatch.setattr(yamlfast, "load", reader)
            try:
                outcomes.append(("ok", yamlsafe.loads(text, "MLproject", ProjectError)))
            except ProjectError as exc:
                outcomes.append(("error", (exc.message, exc.hint)))
        assert outcomes[0][0] == outcomes[1][0] and (
            same(outcomes[0][1], outcomes[1][1]) if outcomes[0][0] == "ok" else outcomes[0] == outcomes[1]
        ), (name, outcomes)


KEYS = ["name", "lr", "a.b", "x-y", "k_1", "1", "1st", "true", "null", "on", "y", "'q k'", '"dq"', "k k", "<<",
        "'1'", "&a k", "? k", "~", "2001-01-01", "-k", ".k", "a:b", '"a\\"b"', "a" * 120]  # fmt: skip
VALUES = [*EDGE_SCALARS[:120:3], "python train.py --lr {lr}", "'a b'", '"x y"', '"a\\"b"', '"\\t\\n\\\\"',
          '"\\x41"', '"\\u00e9"', "'it''s'", "'a''", "a #c", "a: b", "a:b", "x [y], {z}", "{a}", "-1", "- x",
          "&a x", "*a", "!t x", "!!str 1", "|", ">", "a#b", "http://x:1/y", "''", '""', "%x", "@x", "`x`",
          "python=3.11", "pip>=21,<22", "a  b", "'", '"', "---", "...", "-r req.txt", "é", "\\", "a\\b"]  # fmt: skip
FLOW_ITEMS = ["a", "b c", "1", "0.5", "~", "yes", "'q'", '"d"', "'a,b'", "-r x", "python=3.11", "a:b", "", "[x]",
              "{k: v}", "#", "&a", "!t", "a #c", "x]"]  # fmt: skip


def generated_scalar(rng: random.Random) -> str:
    if rng.random() < 0.15:
        items = rng.sample(FLOW_ITEMS, rng.randint(0, 3))
        if rng.random() < 0.5:
            return "[" + ", ".join(items) + "]"
        return "{" + ", ".join(f"{rng.choice(KEYS[:8])}: {item}" for item in items) + "}"
    return rng.choice(VALUES)


def generated_mapping(rng: random.Random, lines: list[str], indent: int, depth: int) -> None:
    pad = " " * indent
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(KEYS) if rng.random() < 0.3 else rng.choice(KEYS[:5])
        roll = rng.random()
        if roll < 0.5 or depth > 2:
            lines.append(f"{pad}{key}: {generated_scalar(rng)}" + rng.choice(["", "", "  # c", " #"]))
        elif roll < 0.58:  # a scalar over several lines, quoted or plain
            quote = rng.choice(["", "'", '"'])
            lines.append(f"{pad}{key}: {quote}{rng.choice(VALUES)}")
            for _ in range(rng.randint(1, 3)):
                lines.append(" " * (indent + rng.choice([0, 1, 2, 4])) + rng.choice([*VALUES, "", "# c"]))
            lines[-1] += quote
        elif roll < 0.65:  # a block scalar, sometimes with a line more indented or a blank after it
            lines.append(f"{pad}{key}: {rng.choice(['>-', '>', '|', '|-', '> #c'])}")
            step = rng.choice([1, 2, 4])
            for _ in range(rng.randint(0, 3)):
                lines.append(" " * (indent + step + rng.choice([0, 0, 0, 1])) + rng.choice(VALUES))
            if rng.random() < 0.3:
                lines.append("")
        elif roll < 0.75:
            lines.append(f"{pad}{key}:")
            generated_block(rng, lines, indent, depth + 1, indentless=True)
        else:
            lines.append(f"{pad}{key}:" + rng.choice(["", " # c"]))
            if rng.random() < 0.9:
                generated_block(rng, lines, indent + rng.choice([1, 2, 4]), depth + 1)


def generated_sequence(rng: random.Random, lines: list[str], indent: int, depth: int) -> None:
    pad = " " * indent
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.6 or depth > 2:
            lines.append(f"{pad}- {generated_scalar(rng)}")
        elif roll < 0.8:  # `- key: value`, perhaps with more keys and a nested block
            lines.append(f"{pad}- {rng.choice(KEYS[:5])}: {generated_scalar(rng)}")
            if rng.random() < 0.5:
                lines.append(f"{pad}  {rng.choice(KEYS[:5])}:")
                generated_block(rng, lines, indent + 2 + rng.choice([0, 2]), depth + 1, rng.random() < 0.5)
        else:
            lines.append(f"{pad}-")
            generated_block(rng, lines, indent + rng.choice([1, 2]), depth + 1)


def generated_block(
    rng: random.Random, lines: list[str], indent: int, depth: int, indentless: bool = False
) -> None:
    if (depth > 2 or rng.random() < 0.55) and not indentless:
        generated_mapping(rng, lines, indent, depth)
    else:
        generated_sequence(rng, lines, indent, depth)
    if rng.random() < 0.2:
        lines.append(rng.choice(["", "# comment", "   # indented comment", "  "]))


def generated_document(rng: random.Random) -> str:
    lines: list[str] = []
    generated_block(rng, lines, 0, 0)
    text = "\n".join(lines) + rng.choice(["\n", "\n", "", "\n\n"])
    for _ in range(rng.choice([0, 0, 1, 2])):  # mutations: most make it malformed or unusual
        where = rng.randrange(len(text) + 1)
        roll = rng.random()
        if roll < 0.5:
            text = text[:where] + rng.choice(" \t\r#:-'\"[]{},&*!|>%@`\\\n\ufeffé") + text[where:]
        elif roll < 0.8:
            text = text[:where] + text[where + 1 :]
        else:
            text = rng.choice(["---\n", "%YAML 1.1\n---\n", " ", "\ufeff"]) + text
    return text


def test_generated_documents_give_what_pyyaml_gives():
    rng = random.Random(20)
    read = sum(check_document(generated_document(rng)) for _ in range(4000))
    assert read > 400  # the fast path is exercised, not just stepped around


LINE_BITS = ["python a.py", "--x {x}", "-x", "- x", "-", "# not a comment", "a: b", "a:b", "x # c", "'q", '"d',
             "it''s", "\\", 'a\\"b', "{x}", "[y]", "yes", "1", "~", "&a", "!t", "|", ">", "---", "...", "a  b",
             "? x", ",", "x ", "  more"]  # fmt: skip
FLOW_BITS = ["a", "b c", "-1", "0.5", "~", "yes", "'q'", '"d"', "'a,b'", '"a\\"b"', '"\\t"', "-r x", "- x", "a:b",
             "a: b", "", "[", "]", "{", "}", ",", "#", " #c", "&a", "!t", "x]", "<<", "$x", "./p", ".inf", "1e3",
             "0x1f", "1:20", "2001-01-01", "? x", "|"]  # fmt: skip


def folded_document(rng: random.Random) -> str:
    """A key whose scalar goes on over lines: block (`>-`, `|`...), quoted or plain, indented
    deeper or not, with blank lines, lines of spaces, comments, and the file ending anywhere."""
    indent = rng.choice([0, 2])
    lines = ["top:"] if indent else []
    head = rng.choice([">", ">-", "|", "|-", ">+", "|2", "> ", ">- #c", "'", '"', "", ""])
    column = indent + rng.choice([0, 1, 2, 3])
    quote = head if head in ("'", '"') else ""
    lines.append(" " * indent + "k: " + head + (rng.choice(LINE_BITS) if head in ("'", '"', "") else ""))
    for _ in range(rng.randint(0, 4)):
        lines.append(
            rng.choice(
                [
                    " " * (column + rng.choice([0, 0, 1, -1])) + rng.choice(LINE_BITS),
                    "",
                    " " * rng.randint(0, 5),
                ]
            )
        )
    lines[-1] += quote + rng.choice(["", "", " #c", "x", " "])
    lines.append(rng.choice(["", " " * indent + "n: 1", "# c", " " * (indent + 1) + "# c", "  "]))
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n", "\n  \n"])


def flow_document(rng: random.Random) -> str:
    """A flow sequence or mapping, nested or not, well formed or not."""

    def flow(depth: int) -> str:
        if depth < 2 and rng.random() < 0.25:
            inner = [flow(depth + 1) for _ in range(rng.randint(0, 3))]
        else:
            inner = [rng.choice(FLOW_BITS) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.5:
            return "[" + rng.choice([",", ", ", " , "]).join(inner) + rng.choice(["]", " ]", "],", ""])
        keys, colons = ["k", "type", "1", "true", '"q"', "a b", "", "'k'", "-k"], [": ", ":", " : ", ""]
        pairs = (rng.choice(keys) + rng.choice(colons) + value for value in inner)
        return "{" + ", ".join(pairs) + rng.choice(["}", " }", ""])

    text = rng.choice(["k: ", "- ", "k:\n  - "]) + flow(0) + rng.choice(["", " # c", "#c", " x", "  "])
    return text + rng.choice(["\n", ""])


@pytest.mark.parametrize("make", [folded_document, flow_document])
def test_scalars_over_lines_and_flow_collections_give_what_pyyaml_gives(make):
    rng = random.Random(5)
    read = sum(check_document(make(rng)) for _ in range(5000))
    assert read > 500


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n- x\n- y\nb: 1\n", {"a": ["x", "y"], "b": 1}),
        ("d:\n  - pip:\n    - mlflow\n  - pip\n", {"d": [{"pip": ["mlflow"]}, "pip"]}),
        ("c: >-\n  python a.py\n  --x {x}\n\n # gone\nn: 1\n", {"c": "python a.py --x {x}", "n": 1}),
        ("c: |\n  a\n  b\n", {"c": "a\nb\n"}),
        ("c: python a.py\n  --x {x}\n\nn: 1\n", {"c": "python a.py --x {x}", "n": 1}),
        ("c: \"python a.py \n     --x '{{x}}' \"\n", {"c": "python a.py --x '{{x}}' "}),
        ("c: >\n  a\n  b", {"c": "a b"}),
        (
            'p: {w: {type: int, default: 8}, s: ["a\\"b", c]}\n',
            {"p": {"w": {"type": "int", "default": 8}, "s": ['a"b', "c"]}},
        ),  # fmt: skip
    ],
)
def test_shapes_real_files_use_are_read(text, expected):
    assert check_document(text)
    assert same(yamlfast.load(text), expected)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: !!str 1\n",  # tags
        "a: 1\na: 2\n",  # duplicate keys: PyYAML keeps the last one silently
        "a: b\n\n  c\n",  # a blank line inside a multi-line plain scalar
        "a: 'b\n\n  c'\n",  # or a quoted one
        'a: "b\\\n  c"\n',  # an escaped line break
        "a: b # c\n  d\n",  # a comment, then more of the scalar: an error
        "a: >\n  b\n\n  c\n",  # a blank line inside a block scalar
        "a: >\n  b\n    c\n",  # a more indented line in one
        "---\na: 1\n",  # document markers
        "a:\tb\n",  # a tab
        "1: a\n",  # a key that is not a string
        "[a]: b\n",
        "a: b: c\n",  # malformed: PyYAML says where
        "a: [b\n",
        "a: 'b' c\n",
        'a: "\\x41"\n',  # an escape not read here
        "x\n",  # a top level that is not a collection
        "",
        "a: café\n",  # non-ASCII
    ],
)
def test_what_it_is_not_sure_of_is_left_to_pyyaml(text):
    assert yamlfast.load(text) is None


# --- the emitter ------------------------------------------------------------------------------


def pyyaml_dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=C_DUMPER, default_flow_style=False, allow_unicode=True, sort_keys=True)


def meta(run_name: str, **more: Any) -> dict[str, Any]:
    run_id = "5a49ace28c20401281e9304a7a59b2ad"
    return {"artifact_uri": f"file:///tmp/mlruns/0/{run_id}/artifacts", "end_time": None,
            "entry_point_name": "main", "experiment_id": "0", "lifecycle_stage": "active", "run_id": run_id,
            "run_name": run_name, "run_uuid": run_id, "source_name": "", "source_type": 4,
            "source_version": "", "start_time": 1795364421951, "status": 1, "tags": [], "user_id": "root",
            **more}  # fmt: skip


def test_a_store_s_meta_yaml_is_written_without_pyyaml_byte_for_byte():
    for data in (
        meta("bright-fox-123"),
        meta("my run", status=3, end_time=1795364422000),
        meta("0123", experiment_id="12", run_id="0123e45"),
        {
            "artifact_location": "file:///tmp/x/mlruns/7",
            "creation_time": 1,
            "experiment_id": "7",
            "last_update_time": 2,
            "lifecycle_stage": "deleted",
            "name": "Default",
        },  # fmt: skip
    ):
        fast = yamlfast.dump_flat(data)
        assert fast == pyyaml_dump(data)
        assert dump_yaml(data) == fast
        assert same(parse_flat(fast), data)


def test_generated_mappings_are_written_as_pyyaml_writes_them_or_left_to_it():
    rng = random.Random(7)
    alphabet = "ab01289 _-.:#'\"/\\=~!?&*%@`[]{},|>()+\t\n\r\x85\x7f\u2028é中\ufeff"
    strings = EDGE_SCALARS + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9))) for _ in range(3000)
    ] + [("word " * n).strip() for n in range(1, 25)] + ["x" * n for n in (60, 90, 200)]  # fmt: skip
    values: list[Any] = [*strings, 0, -3, 10**30, True, False, None, [], {}, 1.5, ["a"], {"a": 1}, (1,)]
    taken = 0
    for _ in range(3000):
        keys = [
            rng.choice(strings) if rng.random() < 0.2 else rng.choice(KEYS[:5])
            for _ in range(rng.randint(1, 4))
        ]
        data = {key: rng.choice(values) for key in keys}
        fast = yamlfast.dump_flat(data)
        if fast is not None:
            taken += 1
            assert fast == pyyaml_dump(data), data
    assert taken > 150
    taken = 0
    for value in strings:  # each string alone, as a value and as a key
        for data in ({"k": value}, {value: 1}):
            fast = yamlfast.dump_flat(data)
            if fast is not None:
                taken += 1
                assert fast == pyyaml_dump(data), data
    assert taken > 600


def test_nested_data_falls_back_to_pyyaml():
    data = {"flavors": {"pytorch": {"model_data": "data", "pytorch_version": "2.3"}}, "run_id": "x"}
    assert yamlfast.dump_flat(data) is None
    assert dump_yaml(data) == pyyaml_dump(data)


# --- the run path ------------------------------------------------------------------------------


def test_a_local_run_with_an_environment_file_does_not_import_yaml(tmp_path):
    """`mlkit run --env-manager local` reads the MLproject, the conda.yaml and the store's meta.yaml
    files, and writes the run's: all of it on the fast paths."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: p\nconda_env: conda.yaml\n\nentry_points:\n  main:\n    parameters:\n"
        "      lr: {type: float, default: 0.01}  # the learning rate\n      n: {type: int, default: 3}\n"
        "      tag: {type: string, default: 'a b'}\n      data: {type: path, default: .}\n"
        '    command: >-\n      python -c "import sys"\n      {lr} {n} {tag} {data}\n'
    )
    (project / "conda.yaml").write_text(
        "name: p\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - requests\n"
    )
    argv = ["run", str(project), "--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0",
            "--store", str(tmp_path / "mlruns")]  # fmt: skip
    code = f"import sys\nsys.argv = ['mlkit', *{argv!r}]\nfrom mlkit.cli import main\nmain()\n"
    for _ in range(2):  # the second run reads the experiment the first one created
        # -X importtime: with a conda.yaml the run leaves by os._exit, so sys.modules cannot be printed
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
        )
        loaded = {
            line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
        }
        assert "mlkit.yamlfast" in loaded and "mlkit.env.spec" in loaded, out.stderr[-2000:]
        assert not {m for m in loaded if m == "yaml" or m.startswith("yaml.")}
    assert "FINISHED" in out.stderr
