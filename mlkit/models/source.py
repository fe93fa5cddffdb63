"""Which source a saved model needs: whether a fresh interpreter would import the model's class
from the same file, and if not, which file or package to copy into the model's `code/` directory."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError


def _stable_dirs() -> list[str]:
    """Directories a fresh interpreter has on sys.path whatever the working directory: stdlib, site dirs, .pth entries."""
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            dirs.add(paths[key])
    if paths.get("platstdlib"):
        dirs.add(os.path.join(paths["platstdlib"], "lib-dynload"))  # the stdlib's extension modules
    site_dirs = list(getattr(site, "getsitepackages", lambda: [])())
    try:
        site_dirs.append(site.getusersitepackages())
    except Exception:  # site disabled
        pass
    dirs.update(site_dirs)
    for site_dir in site_dirs:
        try:
            names = [n for n in os.listdir(site_dir) if n.endswith(".pth")]
        except OSError:
            continue
        for name in names:
            try:
                lines = Path(site_dir, name).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    candidate = os.path.join(site_dir, line)
                    if os.path.isdir(candidate):
                        dirs.add(candidate)
    return [os.path.realpath(d) for d in dirs]


def _found_by_installed_finder(top: str, origin: str) -> bool:
    """True when a non-path finder (e.g. an editable install's) resolves `top` to this file."""

    for finder in sys.meta_path:
        if finder in (
            importlib.machinery.PathFinder,
            importlib.machinery.BuiltinImporter,
            importlib.machinery.FrozenImporter,
        ):
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(top, None)
        except Exception:
            continue
        if (
            spec is not None
            and spec.origin
            and origin.startswith(os.path.dirname(os.path.realpath(spec.origin)) + os.sep)
        ):
            return True
    return False


def class_origin(cls: type) -> str | None:
    """The source file of a class: its module's __file__ if that module still holds this very class,
    else where its methods were compiled (sys.modules[cls.__module__] may since have been replaced
    by another file of the same name, e.g. three projects' `model.py`)."""
    module = sys.modules.get(cls.__module__)
    origin = getattr(module, "__file__", None)
    if origin and getattr(module, cls.__qualname__.split(".")[0], None) is _outermost(cls, module):
        return str(origin)
    for value in vars(cls).values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None and os.path.isfile(code.co_filename):
            return str(code.co_filename)
    return str(origin) if origin else None


def _outermost(cls: type, module: Any) -> Any:
    """The module-level object a (possibly nested) class hangs from, or a sentinel if it is not there."""
    parts = cls.__qualname__.split(".")
    target: Any = module
    for part in parts:
        target = getattr(target, part, None)
    return getattr(module, parts[0], None) if target is cls else object()


def importable_in_fresh_interpreter(module_name: str, origin: str | None = None) -> bool:
    """Whether `import module_name` would find the same file in a fresh interpreter started anywhere."""
    if module_name == "__main__":
        return False
    if origin is None:
        origin = getattr(sys.modules.get(module_name), "__file__", None)
    if not origin:
        return module_name.split(".")[0] in sys.builtin_module_names
    origin = os.path.realpath(origin)
    top = module_name.split(".")[0]
    for d in _stable_dirs():
        # Under a sys.path directory, and found there by that name: a .pth entry such as an
        # editable checkout's root holds other files too (tests/, scripts) that no import reaches.
        if origin.startswith(d + os.sep) and origin[len(d) + 1 :].split(os.sep)[0].split(".")[0] == top:
            return True
    return _found_by_installed_finder(module_name.split(".")[0], origin)


def source_to_copy(cls: type) -> tuple[str, Path]:
    """(module name to import from code/, file or package dir to copy) for a class no fresh interpreter finds."""
    origin = class_origin(cls)
    class_path = f"{cls.__module__}:{cls.__qualname__}"
    if not origin or not Path(origin).is_file():
        raise InvalidInputError(
            f"cannot save model class {class_path}: it has no source file (defined interactively?)",
            hint="define the class in a .py file, or make its module importable (pip install -e .)",
        )
    path = Path(origin).resolve()
    if cls.__module__ == "__main__":
        name = path.stem
        if not name.isidentifier():
            raise InvalidInputError(
                f"cannot save model class {cls.__qualname__} from {path.name}: {name!r} is not a valid module name",
                hint="rename the script (letters, digits, '_'), or move the class to an importable module",
            )
        return name, path
    parts = cls.__module__.split(".")
    if path.name == "__init__.py":
        return cls.__module__, path.parents[len(parts) - 1]  # the top-level package directory
    if len(parts) == 1:
        return cls.__module__, path
    return cls.__module__, path.parents[len(parts) - 2]


def copy_code(target: Path, source: Path, dest_name: str | None = None) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
    dest = target / (dest_name or source.name)
    if dest.exists():
        return
    if source.is_dir():
        shutil.copytree(source, dest, ignore=ignore)
    else:
        shutil.copy2(source, dest)
