"""Shell completion through bash's own machinery (issue 14, item 3): the script `mlkit
--show-completion` prints is sourced by a real bash, which gets COMP_LINE/COMP_POINT/COMP_WORDS/
COMP_CWORD as bash sets them on Tab and calls the function `complete -p mlkit` names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, run_mlkit

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# The words bash makes of a line: split at blanks, and at each of COMP_WORDBREAKS' `=` and `:`
# (which become words of their own); a line ending in a blank has an empty word under the cursor.
DRIVER = r"""
source <(SHELL=/bin/bash mlkit --show-completion) || exit 9
spec=$(complete -p mlkit) || exit 8
func=$(sed -E 's/.*-F ([^ ]+) .*/\1/' <<< "$spec")
COMP_LINE="$1"; COMP_POINT=${#1}
read -r -a COMP_WORDS <<< "$(sed -E 's/([=:])/ \1 /g' <<< "$1")"
[[ $1 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
"$func" mlkit "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture
def tab(tmp_path: Path):
    """`tab("mlkit runs show ")` -> the candidates bash would offer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mlkit"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m mlkit "$@"\n')
    shim.chmod(0o755)
    driver = tmp_path / "driver.sh"
    driver.write_text(DRIVER)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }

    def complete(line: str) -> list[str]:
        out = subprocess.run(
            ["bash", "--norc", "--noprofile", str(driver), line],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return [w for w in out.stdout.splitlines() if w]

    return complete


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "MLproject").write_text(
        "name: p\nentry_points:\n  main:\n    parameters:\n      epochs: {type: int, default: 5}\n"
        "      lr: {type: float, default: 0.01}\n    command: 'python -c pass'\n"
        "  other:\n    command: 'python -c pass'\n"
    )
    (root / "train.py").write_text("pass\n")
    return root


def _run(project: Path, name: str) -> str:
    fast = ("--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0")
    out = run_mlkit("run", str(project), *fast, "--run-name", name)
    assert out.returncode == 0, out.stderr
    return re.search(r"run ([0-9a-f]{32})", out.stderr).group(1)


def test_commands_and_flags(tab):
    assert tab("mlkit r") == ["run", "report", "runs"]
    assert tab("mlkit runs sh") == ["show"]
    assert tab("mlkit run --dry") == ["--dry-run"]
    assert "--skip-if-done" in tab("mlkit run --")
    assert tab("mlkit --install") == ["--install-completion"]


def test_run_ids_and_names(tab, project):
    run_id = _run(project, "lr0.003-w32")
    assert tab("mlkit runs show ") == [run_id, "lr0.003-w32"]
    assert tab("mlkit runs show lr0") == ["lr0.003-w32"]
    assert tab(f"mlkit runs logs {run_id[:4]}") == [run_id]
    # `runs:` is split off by bash at the `:`; the candidate continues after it
    assert tab("mlkit models register runs:/") == [f"/{run_id}/model"]
    assert tab("mlkit runs list -x ") == ["Default", "0"]


def test_entry_points_and_param_names(tab, project):
    assert tab("mlkit run proj -e ") == ["main", "other", "train.py"]
    assert tab("mlkit run proj -P ") == ["epochs=", "lr="]
    assert tab("mlkit run proj -P e") == ["epochs="]
    assert tab("mlkit run proj -P epochs=3 -P ") == ["lr="]
    assert tab("mlkit run proj -P lr=") == ["=0.01"]  # bash puts it after `lr`: lr=0.01
    assert tab("mlkit run proj -e other -P ") == []  # `other` declares none


def test_completion_script_and_install(tmp_path: Path):
    env = {"SHELL": "/bin/bash", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "share")}
    shown = run_mlkit("--show-completion", env=env)
    assert shown.returncode == 0 and "complete -F _mlkit_completion mlkit" in shown.stdout
    assert run_mlkit("--install-completion", env=env).returncode == 0
    assert run_mlkit("--install-completion", env=env).returncode == 0  # twice: one rc line
    rc = (tmp_path / ".bashrc").read_text()
    assert rc.count("mlkit shell completion") == 1
    assert (tmp_path / "share" / "mlkit" / "completion.bash").read_text() == shown.stdout
    fish = run_mlkit("--show-completion", env={**env, "SHELL": "/usr/bin/fish"})
    assert fish.returncode == 2 and "bash and zsh" in fish.stderr


def test_help_does_not_load_completion():
    code = "import sys; sys.argv=['mlkit','--help']\nfrom mlkit.cli import main\ntry: main()\nexcept SystemExit: pass\nprint('mlkit.cli.complete' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_model_names_versions_and_aliases(tab, project, store_root):
    from mlkit.tracking.registry import RegistryStore

    run_id = _run(project, "r1")
    registry = RegistryStore(store_root)
    registry.create_model_version("cnn", f"runs:/{run_id}/model", run_id=run_id)
    registry.create_model_version("cnn", f"runs:/{run_id}/model", run_id=run_id)
    registry.set_alias("cnn", "champion", 2)
    assert tab("mlkit models show ") == ["cnn"]
    assert tab("mlkit models alias cnn ") == ["champion"]
    assert tab("mlkit models alias cnn champion ") == ["1", "2"]
    assert tab("mlkit models download models:/") == ["/cnn/1", "/cnn/2", "/cnn@champion"]
