"""Turn an entry point's command template and parameter values into an argv list or a shell string.

The template is MLflow's: `str.format` placeholders (`{lr}`, `{{` for a literal brace). Values are
never pasted into a string that a shell re-parses unquoted:

- When the template uses no shell syntax, it is split like a shell would (`shlex`) with each
  placeholder standing in a token, and the raw value is put in that token: one value can never
  become two argv items, and nothing in it is interpreted.
- When the template itself needs a shell (`|`, `&&`, `;`, `>`, `$VAR`, `$(...)`, globs, ...), each
  value is `shlex.quote`d for the quoting context its placeholder sits in (outside quotes, inside
  '...', "..." or $'...'), so it is always one literal word.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import string
from dataclasses import dataclass
from pathlib import Path

from mlkit.errors import ProjectError
from mlkit.project.model import EntryPoint, Parameter, ResolvedCommand
from mlkit.project.values import check_value, resolve_path

# Characters that mean "a shell is needed" outside quotes (globs and brace expansion included).
_SHELL_CHARS = set("|&;<>()$`*?[]~{}\n")
# A first word that a shell runs itself rather than looks up as a program.
_SHELL_WORDS = {
    ".",
    "source",
    "cd",
    "export",
    "exec",
    "eval",
    "set",
    "unset",
    "ulimit",
    "umask",
    "time",
    "!",
    "if",
    "for",
    "while",
    "until",
    "case",
    "function",
    "{",
    "[",
    "[[",
    "test",
    "alias",
    "trap",
}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PARAM_KEY = re.compile(r"[/\w.\- :]+")  # MLflow's rule for param names (POSIX)
_SENTINEL = re.compile("\ue000([0-9]+)\ue001")
_UNSUPPORTED = {  # context -> (what is wrong, how to fix it)
    "backtick": ("a parameter inside `...` cannot be quoted safely", "use $(...) instead of backticks"),
    "brace": (
        "a parameter inside ${...} cannot be quoted safely",
        "assign it first: X={p}; ... ${{X:-default}}",
    ),
    "heredoc": (
        "a parameter after a << here-document cannot be quoted safely",
        "pass the value as an argument or use <<<",
    ),
    "backslash": (
        "a parameter right after a backslash cannot be quoted safely",
        "remove the backslash before {p}",
    ),
    "dollar": (
        "a parameter right after '$' would be read by the shell as $'...'",
        "put a space or quotes between $ and {p}",
    ),
}


@dataclass(frozen=True)
class _Template:
    """A parsed command template: literal pieces and placeholder names, plus what the shell sees."""

    pieces: list[tuple[str, str | None]]  # (literal text, placeholder name or None)
    contexts: list[str]  # quoting context of each placeholder: plain, single, double, ansi, ...
    needs_shell: bool


def _parse(command: str) -> _Template:
    """Split `command` into literals and placeholders; raise ValueError for a malformed template."""
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in string.Formatter().parse(command):
        if field is not None and (field == "" or field.isdigit()):
            raise ValueError("positional placeholders such as {} or {0} are not allowed")
        if field is not None and (spec or conversion):
            raise ValueError(
                f"placeholder {{{field}}} has a format spec or conversion; write just {{{field}}}"
            )
        pieces.append((literal, field))
    contexts, needs_shell = _scan(pieces)
    return _Template(pieces, contexts, needs_shell)


def _scan(pieces: list[tuple[str, str | None]]) -> tuple[list[str], bool]:
    """Follow the shell's quoting through the template: the context of each placeholder, and
    whether anything in it needs a shell to run as written."""
    stack = ["plain"]
    contexts: list[str] = []
    shell = False
    heredoc = False
    prev = " "
    for literal, field in pieces:
        i = 0
        escape_at_end = False  # a backslash right before the placeholder would eat its quoting
        while i < len(literal):
            c, nxt, top = literal[i], literal[i + 1 : i + 2], stack[-1]
            if top == "single":
                if c == "'":
                    stack.pop()
            elif top == "ansi":
                if c == "\\":
                    escape_at_end = not nxt
                    i += 1
                elif c == "'":
                    stack.pop()
            elif top == "double":
                if c == "\\":
                    shell = shell or nxt in ("$", "`", "\n")
                    escape_at_end = not nxt
                    i += 1
                elif c == '"':
                    stack.pop()
                elif c in "$`":
                    shell = True
                    if c == "`":
                        stack.append("backtick")
                    elif nxt and nxt in "({":
                        stack.append("subst" if nxt == "(" else "brace")
                        i += 1
            else:  # outside quotes (also inside $(...), `...` and ${...})
                if c == "\\":
                    shell = shell or nxt == "\n"
                    escape_at_end = not nxt
                    i += 1
                elif c == "'":
                    stack.append("single")
                elif c == '"':
                    stack.append("double")
                elif c == "#" and prev.isspace():
                    shell = True
                elif c in _SHELL_CHARS:
                    shell = True
                    if c == "$" and nxt in ("'", "(", "{"):
                        stack.append({"'": "ansi", "(": "subst", "{": "brace"}[nxt])
                        i += 1
                    elif c == "`":
                        stack.pop() if top == "backtick" else stack.append("backtick")
                    elif c == "(":
                        stack.append("subst")
                    elif c == ")" and top == "subst":
                        stack.pop()
                    elif c == "}" and top == "brace":
                        stack.pop()
                    elif c == "<" and nxt == "<":  # << here-document; <<< here-string is fine
                        heredoc = heredoc or literal[i + 2 : i + 3] != "<"
                        i += 2 if literal[i + 2 : i + 3] == "<" else 1
            prev = literal[i] if i < len(literal) else c
            i += 1
        if field is not None:
            top = stack[-1]
            dollar = top in ("plain", "subst") and literal.endswith("$") and not literal.endswith("\\$")
            context = "plain" if top == "subst" else top
            special = "heredoc" if heredoc else "backslash" if escape_at_end else "dollar" if dollar else None
            contexts.append(special or context)
            prev = "x"
    if len(stack) > 1:
        raise ValueError("unclosed quote or bracket")
    return contexts, shell


def _first_word_needs_shell(template: _Template) -> bool:
    skeleton = "".join(lit + ("\ue000\ue001" if f is not None else "") for lit, f in template.pieces)
    words = shlex.split(skeleton)
    return bool(words) and (words[0] in _SHELL_WORDS or bool(_ASSIGNMENT.match(words[0])))


def check_template(command: str, parameters: dict[str, Parameter]) -> list[tuple[str, str, str]]:
    """Problems with a command template as (where, what, hint); empty when it is fine."""
    try:
        template = _parse(command)
    except ValueError as exc:
        return [("", f"{exc}: {command!r}", "write {{ and }} for literal braces and close every quote")]
    problems = []
    for (_, field), context in zip(
        (p for p in template.pieces if p[1] is not None), template.contexts, strict=True
    ):
        assert field is not None
        if field not in parameters:
            known = ", ".join(parameters) or "none declared"
            problems.append(
                (
                    "",
                    f"uses {{{field}}} but declares no parameter {field!r} (parameters: {known})",
                    f"declare {field} under parameters, or write {{{{{field}}}}} for a literal brace",
                )
            )
        elif context in _UNSUPPORTED:
            problems.append(
                (
                    "",
                    f"{{{field}}}: {_UNSUPPORTED[context][0]}",
                    _UNSUPPORTED[context][1].replace("{p}", f"{{{field}}}"),
                )
            )
    return problems


def _error(ep: EntryPoint, key: str, what: str, hint: str) -> ProjectError:
    where = f"entry point {ep.name}" if ep.script else f"entry_points.{ep.name}"
    return ProjectError(f"{ep.source}: {where}{'.' + key if key else ''}: {what}", hint=hint)


def _param_values(
    ep: EntryPoint, given: dict[str, str], storage_dir: Path | None
) -> tuple[dict[str, str], dict[str, str]]:
    """(raw values to log, values to put in the command) for every declared parameter."""
    missing = [p for p in ep.parameters.values() if p.required and p.name not in given]
    if missing:
        names = ", ".join(f"'{p.name}' ({p.type})" for p in missing)
        example = " ".join(f"-P {p.name}=<{p.type}>" for p in missing)
        raise _error(
            ep, "", f"missing required parameter{'s' if len(missing) > 1 else ''} {names}", f"pass {example}"
        )
    raw: dict[str, str] = {}
    final: dict[str, str] = {}
    for index, param in enumerate(ep.parameters.values()):
        from_user = param.name in given
        value = given[param.name] if from_user else param.default
        assert value is not None
        key = f"parameters.{param.name}"
        problem = check_value(param.type, value)
        if problem:
            hint = {
                "int": "pass a whole number, e.g. -P {n}=10",
                "float": "pass a number, e.g. -P {n}=0.01",
            }.get(param.type, "pass a URI, e.g. -P {n}=s3://bucket/key or file:///data/x")
            raise _error(ep, key, f"{problem} (type {param.type})", hint.format(n=param.name))
        raw[param.name] = value
        if param.type == "path":
            base = Path.cwd() if from_user else ep.project_dir
            label = f"{ep.source}: entry_points.{ep.name}.{key}"
            value = resolve_path(value, base=base, index=index, storage_dir=storage_dir, key=label)
        final[param.name] = value
    return raw, final


def valid_param_name(key: str) -> bool:
    """True when MLflow can log `key` as a param name (its character and path rules on POSIX)."""
    norm = posixpath.normpath(key)
    return bool(_PARAM_KEY.fullmatch(key)) and norm == key and not norm.startswith(("..", "/"))


def _check_keys_and_values(ep: EntryPoint, params: dict[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in params.items():
        key, value = str(key), str(value)
        if not valid_param_name(key):
            raise _error(
                ep,
                "",
                f"parameter name {key!r} is not allowed",
                "use letters, digits, _ - . / : and spaces (MLflow's rule), e.g. -P learning_rate=0.1",
            )
        if "\x00" in value:
            raise _error(
                ep, f"parameters.{key}", "the value contains a NUL byte", "remove the NUL byte from the value"
            )
        clean[key] = value
    return clean


def resolve_entry_point(
    ep: EntryPoint, params: dict[str, str], storage_dir: Path | None = None
) -> ResolvedCommand:
    """Check `params` against `ep`, fill them into its command: argv, or a shell string when needed."""
    given = _check_keys_and_values(ep, params)
    raw, final = _param_values(ep, given, storage_dir)
    extra = [k for k in given if k not in ep.parameters]
    for key in extra:
        raw[key] = given[key]
    types = {name: p.type for name, p in ep.parameters.items()} | {k: "string" for k in extra}
    try:
        template = _parse(ep.command)
    except ValueError as exc:  # load_project checks this; an EntryPoint built by hand may not be
        raise _error(
            ep, "command", str(exc), "write {{ and }} for literal braces and close every quote"
        ) from exc
    fields = [f for _, f in template.pieces if f is not None]
    for field, context in zip(fields, template.contexts, strict=True):
        if field not in final:
            raise _error(
                ep,
                "command",
                f"uses {{{field}}} but declares no parameter {field!r}",
                f"declare {field} under parameters",
            )
        if context in _UNSUPPORTED:
            raise _error(
                ep,
                "command",
                f"{{{field}}}: {_UNSUPPORTED[context][0]}",
                _UNSUPPORTED[context][1].replace("{p}", f"{{{field}}}"),
            )
    if template.needs_shell or _first_word_needs_shell(template):
        return ResolvedCommand(None, _render_shell(template, final, given, extra), raw, types, extra)
    return ResolvedCommand(_render_argv(template, final, given, extra), None, raw, types, extra)


def _render_argv(
    template: _Template, final: dict[str, str], given: dict[str, str], extra: list[str]
) -> list[str]:
    names = [f for _, f in template.pieces if f is not None]
    skeleton = "".join(
        lit + (f"\ue000{names.index(f)}\ue001" if f is not None else "") for lit, f in template.pieces
    )
    argv = [_SENTINEL.sub(lambda m: final[names[int(m.group(1))]], word) for word in shlex.split(skeleton)]
    for key in extra:
        argv += [f"--{key}", given[key]]
    return argv


def _render_shell(template: _Template, final: dict[str, str], given: dict[str, str], extra: list[str]) -> str:
    out: list[str] = []
    contexts = iter(template.contexts)
    for literal, field in template.pieces:
        out.append(literal)
        if field is None:
            continue
        quoted = shlex.quote(final[field])
        context = next(contexts)
        # Close the surrounding quotes, add the quoted value, reopen them: always one literal word.
        out.append(
            {"single": f"'{quoted}'", "double": f'"{quoted}"', "ansi": f"'{quoted}$'"}.get(context, quoted)
        )
    command = "".join(out)
    for key in extra:
        command += f" --{shlex.quote(key)} {shlex.quote(given[key])}"
    return command


def shell_argv(shell_command: str) -> list[str]:
    """The argv that runs a `ResolvedCommand.shell` string the way MLflow does (`bash -c` on POSIX)."""
    return ["bash", "-c", shell_command]
