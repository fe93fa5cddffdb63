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

import re
import shlex
import string
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit.errors import InvalidInputError, ProjectError
from mlkit.project.names import typo_of
from mlkit.project.values import check_value, resolve_path

if TYPE_CHECKING:  # annotations only: mlkit.project.model's EntryPoint.resolve calls this module
    from mlkit.project.model import EntryPoint, Parameter

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
    "ansi_sh": (
        "a parameter inside $'...' in a script for sh (dash and bash read $'...' differently)",
        "use '...' or \"...\" around {p}, or run the script with bash -c",
    ),
    "dollar": (
        "a parameter right after '$' would be read by the shell as $'...'",
        "put a space or quotes between $ and {p}",
    ),
}


@dataclass(frozen=True, eq=False)
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


# A hand-written state machine over the shell's quoting rules (a stack of contexts, one branch per
# character class): split, the states would lose the one loop that shows which character moves
# the scanner from which context to which.
def _scan(pieces: list[tuple[str, str | None]]) -> tuple[list[str], bool]:  # noqa: C901
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


def check_template(
    command: str, parameters: dict[str, Parameter], declared: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, str, str]]:
    """Problems with a command template as (where, what, hint); empty when it is fine. Names in
    `declared` but not in `parameters` are declared parameters already reported as broken: their
    placeholders are not reported again."""
    try:
        template = _parse(command)
    except ValueError as exc:
        return [("", f"{exc}: {command!r}", "write {{ and }} for literal braces and close every quote")]
    problems = []
    fields = [f for _, f in template.pieces if f is not None]
    all_levels = _analyze(template, 0, template.needs_shell or _first_word_needs_shell(template))
    for name, context, levels in zip(fields, template.contexts, all_levels, strict=True):
        if name not in parameters and name in declared:
            continue
        if name not in parameters:
            known = ", ".join(parameters) or "none declared"
            known = known if len(known) <= 80 else known[:77] + "..."
            problems.append(
                (
                    "",
                    f"uses {{{name}}} but declares no parameter {name!r} (parameters: {known})",
                    f"declare {name} under parameters, or write {{{{{name}}}}} for a literal brace",
                )
            )
        elif context in _UNSUPPORTED:
            problems.append(
                (
                    "",
                    f"{{{name}}}: {_UNSUPPORTED[context][0]}",
                    _UNSUPPORTED[context][1].replace("{p}", f"{{{name}}}"),
                )
            )
        else:
            problems += [("", w, h) for w, h in _level_problems(name, parameters[name].type, levels, True)]
    return list(dict.fromkeys(problems))


@dataclass(frozen=True, eq=False)
class ResolvedCommand:
    """An entry point's command with the parameters filled in.

    Exactly one of `argv` (run directly, every value one argv item) and `shell` (the MLproject
    command itself uses shell syntax; values are shell-quoted) is set. `params` holds the raw
    values to log (declared parameters in declaration order, defaults included, then extras);
    `types` maps every name in `params` to its type (`string` for extras); `extra` lists the
    names that the entry point does not declare, appended to the command as `--name value`.
    """

    argv: list[str] | None
    shell: str | None
    params: dict[str, str]
    types: dict[str, str]
    extra: list[str]


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
            value = resolve_path(
                value, base=base, index=index, storage_dir=storage_dir, key=label, default=not from_user
            )
        final[param.name] = value
    return raw, final


def param_name_problem(key: str) -> str | None:
    """Why the store cannot log `key` as a param name (its key rules), or None when it can."""
    # import budget: the store's key rules (mlkit.tracking) load only when a name is checked
    from mlkit.tracking.validation import validate_key

    try:
        validate_key(key, "param")
    except InvalidInputError as exc:
        return exc.message
    return None


def valid_param_name(key: str) -> bool:
    """True when the store (MLflow's rules) can log `key` as a param name."""
    return param_name_problem(key) is None


def _name_clash(keys: list[str]) -> tuple[str, str] | None:
    """Two param names where one is a folder of the other (`a`, `a/b`): both cannot be files."""
    names = set(keys)
    for key in keys:
        parts = key.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in names:
                return "/".join(parts[:n]), key
    return None


def _check_keys_and_values(ep: EntryPoint, params: dict[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in params.items():
        key, value = str(key), str(value)
        problem = param_name_problem(key)
        if problem:
            shown = repr(key) if len(key) <= 60 else f"{key[:60]!r}..."
            raise _error(
                ep,
                "",
                f"parameter name {shown} is not allowed: it cannot be logged ({problem})",
                "use letters, digits, _ - . / : and spaces, at most 250 characters, no '.', '..' or "
                "empty path parts (MLflow's rule), e.g. -P learning_rate=0.1",
            )
        if "\x00" in value:
            raise _error(
                ep, f"parameters.{key}", "the value contains a NUL byte", "remove the NUL byte from the value"
            )
        clean[key] = value
    clash = _name_clash(list(dict.fromkeys([*ep.parameters, *clean])))
    if clash:
        raise _error(
            ep,
            "",
            f"parameter names {clash[0]!r} and {clash[1]!r} cannot both be logged ({clash[0]!r} would be "
            "both a value and a folder in the store)",
            f"rename one of them, e.g. {clash[1].replace('/', '_')!r}",
        )
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
    for name, context in zip(fields, template.contexts, strict=True):
        if name not in final:
            raise _error(
                ep,
                "command",
                f"uses {{{name}}} but declares no parameter {name!r}",
                f"declare {name} under parameters",
            )
        if context in _UNSUPPORTED:
            raise _error(
                ep,
                "command",
                f"{{{name}}}: {_UNSUPPORTED[context][0]}",
                _UNSUPPORTED[context][1].replace("{p}", f"{{{name}}}"),
            )
    shell = template.needs_shell or _first_word_needs_shell(template)
    # Every occurrence's value (extra parameters add `--key` and the value), checked and quoted
    # for every shell inside the command that reads it again.
    names = fields + [n for key in extra for n in (f"--{key}", key)]
    values = [final[f] for f in fields] + [v for key in extra for v in (f"--{key}", given[key])]
    all_levels = _analyze(template, len(extra), shell)
    rendered: list[str] = []
    for k, (name, value, levels) in enumerate(zip(names, values, all_levels, strict=True)):
        label = name if k < len(fields) else (name[2:] if name.startswith("--") else name)
        problems = _level_problems(label, types.get(label, "string"), levels, True)
        problem = problems[0] if problems else _level_value_problem(label, value, levels)
        if problem:
            raise _error(ep, "command" if k < len(fields) else f"parameters.{label}", *problem)
        rendered.append(_render_levels(value, levels))
    if shell:
        return ResolvedCommand(None, _render_shell(template, rendered, len(fields)), raw, types, extra)
    return ResolvedCommand(_render_argv(template, rendered, len(fields)), None, raw, types, extra)


def _numbered(template: _Template) -> list[tuple[str, int | None]]:
    """The template's pieces with each placeholder replaced by its occurrence number."""
    out: list[tuple[str, int | None]] = []
    k = 0
    for literal, name in template.pieces:
        out.append((literal, k if name is not None else None))
        k += name is not None
    return out


def _render_argv(template: _Template, rendered: list[str], n_fields: int) -> list[str]:
    skeleton = "".join(lit + (f"\ue000{k}\ue001" if k is not None else "") for lit, k in _numbered(template))
    skeleton += "".join(f" \ue000{k}\ue001" for k in range(n_fields, len(rendered)))
    return [_SENTINEL.sub(lambda m: rendered[int(m.group(1))], word) for word in shlex.split(skeleton)]


def _render_shell(template: _Template, rendered: list[str], n_fields: int) -> str:
    out: list[str] = []
    for literal, k in _numbered(template):
        out.append(literal)
        if k is not None:
            # Close the surrounding quotes, add the quoted value, reopen them: one literal word.
            out.append(_quote_for(rendered[k], template.contexts[k]))
    for k in range(n_fields, len(rendered), 2):  # extra parameters: --key value
        key, value = rendered[k], rendered[k + 1]
        key = "--" + shlex.quote(key[2:]) if key.startswith("--") else shlex.quote(key)
        out.append(f" {key} {shlex.quote(value)}")
    return "".join(out)


def shell_argv(shell_command: str) -> list[str]:
    """The argv that runs a `ResolvedCommand.shell` string the way MLflow does (`bash -c` on POSIX)."""
    return ["bash", "-c", shell_command]


# ----------------------------------------------------------------------------------- nested shells
#
# A value can reach a shell more than once: `sh -c 'python a.py {x}'` has no shell syntax, so the
# outer level is an argv list, but `sh` parses its script. `_analyze` follows the template through
# every level: it splits each level into simple commands and words (as bash does), finds the words
# that another shell will parse as a script (the argument of `sh -c`/`bash -c` and the other shells,
# `eval`, `trap`, `su -c`, the remote command of `ssh`, `watch`), and lexes those scripts again. Each
# placeholder occurrence gets one `_Level` per shell that parses it; the value is quoted for the
# innermost shell first, then that text for each shell around it. Where quoting cannot protect a
# value (arithmetic, `[[ ]]`, variable names, a script whose text the outer shell computes), only a
# plain number of a declared `int`/`float` parameter is accepted.

_SHELLS = {
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "ash",
    "yash",
    "posh",
    "busybox",
    "fish",
    "csh",
    "tcsh",
}
_SHELL_OPT_ARG = {"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}
_SSH_OPT_ARG = set("BbcDEeFIiJLlmOopQRSWw")
_NAME_BUILTINS = {"unset", "read", "mapfile", "readarray", "getopts", "local", "declare", "typeset",
                  "readonly", "export"}  # fmt: skip
_ANSI_SHELLS = {"bash", "zsh", "ksh", "mksh", "yash"}  # know $'...'; sh may be dash or bash
_OTHER_QUOTING = {"fish", "csh", "tcsh"}  # '...' does not mean what it means to sh
_DECLARE = {"local", "declare", "typeset", "readonly", "export"}
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ASSIGN_WORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?\+?=|\[[^\]]*\]\+?=")  # x=, a[i]=, [i]=
_MAX_DEPTH = 8


@dataclass(eq=False)
class _Level:
    """How one shell sees one placeholder occurrence."""

    ctx: str = "plain"  # plain, single, double, ansi, raw (put in as is: a number)
    numeric: str | None = None  # why only a number is safe here
    special: str | None = None  # a key of _UNSUPPORTED: no quoting is safe
    no_dash: str | None = None  # why the value must not start with '-' or '+' (an option)
    where: str = ""  # the shell this is, for messages


@dataclass(eq=False)
class _Word:
    items: list = _field(default_factory=list)  # (char or occurrence id, quoting context)
    expansion: bool = False  # the outer shell computes part of it ($VAR, $(...), $'\n')
    started: bool = False

    def static(self) -> str | None:
        if self.expansion or any(isinstance(it, int) for it, _ in self.items):
            return None
        return "".join(it for it, _ in self.items)

    def occurrences(self) -> list[int]:
        return [it for it, _ in self.items if isinstance(it, int)]


class _Lexer:
    """One level of shell: quoting, words, simple commands, arithmetic, and the scripts it runs."""

    def __init__(
        self, items: list, where: str, depth: int, out: dict, builtins: bool = True, dialect: str = "bash"
    ):
        self.s, self.i, self.where, self.depth, self.out = items, 0, where, depth, out
        self.dialect = dialect  # which shell reads this level: sh may or may not know $'...'
        self.builtins = builtins  # False for an argv list: no shell reads it, only what it runs
        self.levels: dict[int, _Level] = {}
        self.heredoc = False
        self.int_declared = False
        self.assigned: list[int] = []  # occurrences in an assignment's value (arithmetic after declare -i)
        self.scripts: list[tuple[list, str, str | None, str]] = []

    # -- helpers
    def peek(self, k: int = 0):
        j = self.i + k
        return self.s[j] if j < len(self.s) else None

    def level(self, occ: int, ctx: str) -> _Level:
        lvl = self.levels.setdefault(occ, _Level(ctx=ctx, where=self.where))
        if self.heredoc:
            lvl.special = lvl.special or "heredoc"
        return lvl

    def numeric(self, occ: int, why: str, ctx: str = "raw") -> None:
        lvl = self.level(occ, ctx)
        lvl.numeric = lvl.numeric or why

    def run(self) -> None:
        self.commands(stop=None)
        for occ in self.assigned if self.int_declared else []:
            self.numeric(occ, "the value of a variable declared with -i (arithmetic)", self.levels[occ].ctx)
        for occ, lvl in self.levels.items():
            self.out.setdefault(occ, []).append(lvl)
        for items, where, raw, dialect in self.scripts:
            if raw or self.depth >= _MAX_DEPTH:
                for occ in (it for it in items if isinstance(it, int)):
                    lvl = _Level("raw", numeric=raw or f"in {where}, nested too deeply")
                    self.out.setdefault(occ, []).append(lvl)
                continue
            _Lexer(items, where, self.depth + 1, self.out, dialect=dialect).run()

    # -- the grammar (enough of it to know how each placeholder is read)
    # The lexer's main loop: one branch per shell token (quotes, $, backslash, operators, words).
    # Kept whole so the token grammar reads in one place, like a shell's own lexer.
    def commands(self, stop: str | None) -> None:  # noqa: C901
        """Simple commands until `stop` (')' for $(...), '`') or the end."""
        words: list[_Word] = []
        word = _Word()
        in_test = False

        def end_word() -> None:
            nonlocal word, in_test
            if word.started:
                text = word.static()
                if not words and text == "[[":
                    in_test = True
                elif in_test and text == "]]":
                    in_test = False
                words.append(word)
            word = _Word()

        def end_command() -> None:
            nonlocal words, in_test
            end_word()
            if words:
                self.command(words)
            words = []
            in_test = False

        while self.i < len(self.s):
            c, nxt = self.peek(), self.peek(1)
            if isinstance(c, int):
                lvl = self.level(c, "plain")
                if in_test:
                    lvl.numeric = lvl.numeric or "inside [[ ]]"
                word.items.append((c, "plain"))
                word.started = True
                self.i += 1
                continue
            if stop and c == stop:
                break
            if c in " \t":
                end_word()
                self.i += 1
            elif c == "#" and not word.started:
                while self.i < len(self.s) and self.peek() != "\n":
                    if isinstance(self.peek(), int):
                        self.level(self.peek(), "plain")
                    self.i += 1
            elif c in "\n;&|)":
                if c == ")" and not in_test:
                    end_command()
                    self.i += 1
                    continue
                if in_test and c != "\n":
                    end_word()
                    self.i += 1
                    continue
                end_command()
                self.i += 1
            elif c == "(":
                if nxt == "(" and not word.started:
                    end_word()
                    self.i += 2
                    self.arith("))", "inside (( ))")
                elif in_test:
                    self.i += 1
                else:
                    end_command()
                    self.i += 1
            elif c in "<>":
                end_word()
                if c == "<" and nxt == "<" and self.peek(2) != "<":
                    self.heredoc = True
                while self.peek() in ("<", ">", "&", "|"):
                    self.i += 1
            elif c == "\\":
                if isinstance(nxt, int):
                    self.level(nxt, "plain").special = "backslash"
                elif nxt is not None and nxt != "\n":
                    word.items.append((nxt, "plain"))
                word.started = True
                self.i += 2
            elif c == "'":
                word.started = True
                self.quoted_single(word)
            elif c == '"':
                word.started = True
                self.i += 1
                self.quoted_double(word)
            elif c == "$":
                word.started = True
                self.dollar(word, "plain")
            elif c == "`":
                word.started = True
                word.expansion = True
                self.backtick()
            else:
                word.items.append((c, "plain"))
                word.started = True
                self.i += 1
        end_command()

    def quoted_single(self, word: _Word) -> None:
        self.i += 1
        while self.i < len(self.s) and self.peek() != "'":
            c = self.peek()
            if isinstance(c, int):
                self.level(c, "single")
            word.items.append((c, "single"))
            self.i += 1
        self.i += 1

    def quoted_double(self, word: _Word) -> None:
        while self.i < len(self.s) and self.peek() != '"':
            c, nxt = self.peek(), self.peek(1)
            if isinstance(c, int):
                self.level(c, "double")
                word.items.append((c, "double"))
                self.i += 1
            elif c == "\\":
                if isinstance(nxt, int):
                    self.level(nxt, "double").special = "backslash"
                    self.i += 1
                elif nxt in ("$", "`", '"', "\\"):
                    word.items.append((nxt, "double"))
                    self.i += 2
                elif nxt == "\n":
                    self.i += 2
                else:
                    word.items.append((c, "double"))
                    self.i += 1
            elif c == "$":
                self.dollar(word, "double")
            elif c == "`":
                word.expansion = True
                self.backtick()
            else:
                word.items.append((c, "double"))
                self.i += 1
        self.i += 1

    # Every form a `$` starts ($x, ${...}, $(...), $((...)), $[...], $'...', $"...") is one branch:
    # the list of forms is the point, and each branch is a few lines.
    def dollar(self, word: _Word, ctx: str) -> None:  # noqa: C901
        nxt, nxt2 = self.peek(1), self.peek(2)
        if isinstance(nxt, int):
            self.level(nxt, ctx).special = "dollar"
            self.i += 1
            return
        if nxt == "(" and nxt2 == "(":
            word.expansion = True
            self.i += 3
            self.arith("))", "inside $(( ))")
        elif nxt == "(":
            word.expansion = True
            self.i += 2
            self.commands(stop=")")
            self.i += 1
        elif nxt == "[":
            word.expansion = True
            self.i += 2
            self.arith("]", "inside $[ ]")
        elif nxt == "{":
            word.expansion = True
            self.i += 2
            depth = 1
            while self.i < len(self.s) and depth:
                c = self.peek()
                if isinstance(c, int):
                    self.level(c, ctx).special = "brace"
                depth += {"{": 1, "}": -1}.get(c, 0) if isinstance(c, str) else 0
                self.i += 1
        elif nxt == "'" and ctx == "plain":
            self.i += 2
            while self.i < len(self.s) and self.peek() != "'":
                c = self.peek()
                if isinstance(c, int):
                    lvl = self.level(c, "ansi")
                    if self.dialect not in _ANSI_SHELLS:
                        lvl.special = lvl.special or "ansi_sh"
                    word.items.append((c, "ansi"))
                elif c == "\\":
                    word.expansion = True  # an escape: the text differs from what is written
                    if isinstance(self.peek(1), int):
                        self.level(self.peek(1), "ansi").special = "backslash"
                    self.i += 1
                else:
                    word.items.append((c, "ansi"))
                self.i += 1
            self.i += 1
        elif nxt == '"' and ctx == "plain":
            self.i += 2
            self.quoted_double(word)
        elif isinstance(nxt, str) and (nxt.isalnum() or nxt in "_@*#?$!-"):
            word.expansion = True
            self.i += 2
            if nxt.isalpha() or nxt == "_":
                while isinstance(self.peek(), str) and (self.peek().isalnum() or self.peek() == "_"):
                    self.i += 1
        else:
            word.items.append(("$", ctx))
            self.i += 1

    def backtick(self) -> None:
        self.i += 1
        while self.i < len(self.s) and self.peek() != "`":
            c = self.peek()
            if isinstance(c, int):
                self.level(c, "plain").special = "backtick"
            self.i += 2 if c == "\\" else 1
        self.i += 1

    def arith(self, close: str, why: str) -> None:
        """Skip an arithmetic expression up to `close`; every placeholder in it is a number."""
        depth = 0
        while self.i < len(self.s):
            c = self.peek()
            if isinstance(c, int):
                self.numeric(c, why)
            elif c == "(" or (close == "]" and c == "["):
                depth += 1
            elif depth and (c == ")" or (close == "]" and c == "]")):
                depth -= 1
            elif "".join(x for x in self.s[self.i : self.i + len(close)] if isinstance(x, str)) == close:
                self.i += len(close)
                return
            self.i += 1

    # -- one simple command: which words a shell reads again, which are names or numbers
    # One branch per builtin or wrapper that reads its words again (`[[`, `let`, `declare -i`,
    # `sh -c`, `eval`, `ssh`, ...): the table of what each does to a placeholder, kept in one place.
    def command(self, words: list[_Word]) -> None:  # noqa: C901
        texts = [w.static() for w in words]
        if texts[0] == "[[" and self.builtins:
            for w in words:
                for occ in w.occurrences():
                    self.numeric(occ, "inside [[ ]]", self.levels[occ].ctx)
            return
        j = 0
        while self.builtins and j < len(words) and self.assignment(words[j], texts[j]):
            j += 1
        if j == len(words):
            return
        name = (texts[j] or "").rsplit("/", 1)[-1]
        args = words[j + 1 :]
        arg_texts = texts[j + 1 :]
        if not self.builtins:
            pass
        elif name in ("builtin", "command", "exec") and args:
            return self.command(args)
        elif name == "eval":
            self.script(args, "eval", self.dialect)
        elif name == "trap" and args:
            self.script(args[:1], "trap", self.dialect)
        elif name == "let":
            for w in args:
                for occ in w.occurrences():
                    self.numeric(occ, "an argument of let (arithmetic)", self.levels[occ].ctx)
        elif name == "printf" or name in ("test", "["):
            flag = "-v" if name == "printf" else None
            for k, w in enumerate(args[1:], 1):
                if arg_texts[k - 1] == (flag or "-v") or (flag is None and arg_texts[k - 1] == "-R"):
                    for occ in w.occurrences():
                        self.numeric(occ, f"a variable name given to {name}", self.levels[occ].ctx)
        elif name in _NAME_BUILTINS:
            if name in _DECLARE and any(
                t and t[:1] in "-+" and "i" in t and not t.startswith("--") for t in arg_texts
            ):
                self.int_declared = True
            for w in args:
                self.name_word(w, f"a variable name given to {name}")
        for k, t in enumerate(texts):
            base = (t or "").rsplit("/", 1)[-1]
            if base in _SHELLS:
                self.shell_args(words[k + 1 :], base)
                break
            if base == "ssh":
                self.ssh_args(words[k + 1 :])
                break
            if base in ("su", "runuser"):
                for m in range(k + 1, len(words) - 1):
                    if texts[m] in ("-c", "--command"):
                        self.script([words[m + 1]], f"{base} -c", "sh")
                        break
                break
            if base == "watch":
                rest = words[k + 1 :]
                while rest and (rest[0].static() or "").startswith("-"):
                    rest = rest[2:] if rest[0].static() in ("-n", "--interval", "-d") else rest[1:]
                self.script(rest, "watch", "sh")
                break

    def assignment(self, word: _Word, text: str | None) -> bool:
        """Is `word` NAME=value (or NAME[i]=value)? Placeholders in a subscript are numbers."""
        flat = "".join(it if isinstance(it, str) else "0" for it, _ in word.items)
        match = _ASSIGN_WORD.match(flat)
        if not match or any(ctx != "plain" for _, ctx in word.items[: match.end()]):
            return False
        for it, _ in word.items[: match.end()]:
            if isinstance(it, int):
                self.numeric(it, "an array subscript (arithmetic)", self.levels[it].ctx)
        self.assigned += [it for it, _ in word.items[match.end() :] if isinstance(it, int)]
        return True

    def name_word(self, word: _Word, why: str) -> None:
        if self.assignment(word, word.static()):
            return
        for occ in word.occurrences():
            self.numeric(occ, why, self.levels[occ].ctx)

    def no_dash(self, words: list[_Word], why: str) -> None:
        for w in words:
            for occ in w.occurrences():
                lvl = self.levels[occ]
                lvl.no_dash = lvl.no_dash or why

    def shell_args(self, words: list[_Word], shell: str) -> None:
        """`bash [options] -c SCRIPT [name args...]`: SCRIPT is read by the shell."""
        has_c = False
        k = 0
        while k < len(words):
            t = words[k].static()
            if t is None:
                if has_c:
                    self.script(words[k : k + 1], f"{shell} -c", shell)
                else:  # `bash {x}`: a value "-c" would make the next word a script
                    self.no_dash(words[k : k + 1], f"an option or operand of {shell}")
                return
            if t in _SHELL_OPT_ARG:
                k += 2
                continue
            if t[:1] in "-+" and t not in ("-", "--"):
                has_c = has_c or (not t.startswith("--") and "c" in t[1:])
                k += 1
                continue
            if t == "--":
                k += 1
            if has_c and k < len(words):
                self.script(words[k : k + 1], f"{shell} -c", shell)
            return

    def ssh_args(self, words: list[_Word]) -> None:
        """`ssh [options] HOST COMMAND...`: the words after HOST are joined and read by a shell."""
        k = 0
        while k < len(words):
            t = words[k].static()
            if t is None or not t.startswith("-"):
                break
            if t == "--":
                k += 1
                break
            k += 2 if t[-1] in _SSH_OPT_ARG and len(t) == 2 else 1
        for w in words[: min(k, len(words))]:
            for occ in w.occurrences():
                self.numeric(occ, "an option of ssh", self.levels[occ].ctx)
        if k < len(words):
            self.no_dash(words[k : k + 1], "the host of ssh")
            self.script(words[k + 1 :], "ssh", "sh")

    def script(self, words: list[_Word], where: str, dialect: str) -> None:
        """Words another shell reads as a script (joined with spaces, as eval and ssh do)."""
        if not any(w.occurrences() for w in words):
            return
        label = f"the script of {where}" + (f" in {self.where}" if self.where else "")
        if dialect in _OTHER_QUOTING:
            why = f"in {label}, a shell whose quoting differs from sh's"
            self.scripts.append(([occ for w in words for occ in w.occurrences()], label, why, dialect))
            return
        if any(w.expansion for w in words):
            why = f"in {label}, whose text the outer shell computes ($VAR, $(...))"
            self.scripts.append(([occ for w in words for occ in w.occurrences()], label, why, dialect))
            return
        items: list = []
        for n, w in enumerate(words):
            if n:
                items.append(" ")
            items += [it for it, _ in w.items]
        self.scripts.append((items, label, None, dialect))


def _analyze(template: _Template, extra: int, shell: bool) -> list[list[_Level]]:
    """For each placeholder occurrence (then 2 per extra parameter: `--key`, value), how every
    shell that reads it sees it, outermost first."""
    items: list = []
    occ = 0
    for literal, name in template.pieces:
        items += list(literal)
        if name is not None:
            items.append(occ)
            occ += 1
    for _ in range(extra):
        items += [" ", occ, " ", occ + 1]
        occ += 2
    out: dict[int, list[_Level]] = {}
    _Lexer(items, "", 0, out, builtins=shell).run()
    return [out.get(k) or [_Level()] for k in range(occ)]


def _where(levels: list[_Level], k: int) -> str:
    return f" in {levels[k].where}" if levels[k].where else ""


def _level_problems(name: str, ptype: str, levels: list[_Level], top_special: bool) -> list[tuple[str, str]]:
    """What is wrong with a parameter of type `ptype` at this position whatever its value."""
    for k, lvl in enumerate(levels):
        if lvl.special and (k or not top_special):
            what, hint = _UNSUPPORTED[lvl.special]
            return [(f"{{{name}}}{_where(levels, k)}: {what}", hint.replace("{p}", f"{{{name}}}"))]
    for k, lvl in enumerate(levels):
        if lvl.numeric and ptype not in ("int", "float"):
            return [
                (
                    f"{{{name}}} (type {ptype}) is {lvl.numeric}{_where(levels, k)}: quoting cannot "
                    "protect a value there, only a number can be used",
                    f"declare {name} with type: int or type: float, or pass the value to the script "
                    "as an argument (sh -c '... \"$1\"' sh {" + name + "})",
                )
            ]
    return []


def _level_value_problem(name: str, value: str, levels: list[_Level]) -> tuple[str, str] | None:
    for k, lvl in enumerate(levels):
        if lvl.numeric and not _NUMBER.fullmatch(value):
            return (
                f"parameter {name!r} is {lvl.numeric}{_where(levels, k)}, where only a plain number "
                f"is safe, and {value!r} is not one",
                f"pass a number such as -P {name}=1",
            )
        if lvl.no_dash and value[:1] in ("-", "+"):
            return (
                f"parameter {name!r} is {lvl.no_dash}{_where(levels, k)}: the value {value!r} would be "
                "read as an option",
                f"pass a value that does not start with '-' or '+' for {name}",
            )
    return None


def _quote_for(value: str, ctx: str) -> str:
    """`value` as text that a shell reads back as exactly `value` in quoting context `ctx`."""
    if ctx == "raw":
        return value
    quoted = shlex.quote(value)
    return {"single": f"'{quoted}'", "double": f'"{quoted}"', "ansi": f"'{quoted}$'"}.get(ctx, quoted)


def _render_levels(value: str, levels: list[_Level]) -> str:
    """`value` quoted for the innermost shell, that for the next one out, ... (not the outermost)."""
    for lvl in reversed(levels[1:]):
        value = _quote_for(value, lvl.ctx)
    return value


def check_undeclared(ep: EntryPoint, params: dict[str, str], *, strict: bool = False) -> list[str]:
    """Warnings for `-P` names the entry point does not declare (MLflow appends them as
    `--name value`): one line for each name close to a declared one ("did you mean width?"); with
    `strict`, any undeclared name is a ProjectError instead. Script entry points declare nothing,
    so every name is theirs to take."""
    if ep.script:
        return []
    declared = list(ep.parameters)
    warnings: list[str] = []
    for name in params:
        if name in ep.parameters:
            continue
        close = typo_of(name, declared) if declared else None
        mean = f" (did you mean {close}?)" if close else ""
        shown = repr(name) if len(name) <= 60 else f"{name[:60]!r}..."
        if strict:
            known = ", ".join(declared) or "none"
            raise _error(
                ep,
                "",
                f"-P {shown}: not a parameter of this entry point{mean}",
                f"declared: {known if len(known) <= 120 else known[:117] + '...'}; "
                "drop --strict-params to pass it as --name value",
            )
        if close:
            warnings.append(
                f"-P {shown} is not declared{mean}: it is passed as --{name} {_clip_value(params[name])}"
            )
    return warnings


def _clip_value(value: str) -> str:
    shown = shlex.quote(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
