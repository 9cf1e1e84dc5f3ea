"""Rules are data: one YAML file per migration step under rules/, loaded and checked into `Rule` objects.

A rule names the declaration it must resolve to (a function and its header, or a struct field), the
replacement, the options it reads, and its own test cases (`invalid`: snippet and expected output; `valid`:
snippets to leave alone). The engine implements one handler per rule *kind*; the YAML says which kind.

A rules file is validated against a schema on load (`SCHEMA`, `KIND_SPECS`): an unknown key (`opt-in` for
`opt_in`), a value of the wrong type, a rule id used twice, an option or rule a test case names that does not
exist — each is a `RuleError` naming the file, the rule and the key. Besides `rules`, a file may list `advisories`:
code that compiles at the target but behaves differently, found by the declarations it uses (functions called, a
field assigned or read, with conditions on the values written: `ADVISORY_CONDITIONS`) and reported with the file's
message (rule_advisories.py).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrate.paths import data_dir
from migrate.rewrite.defaults import MEMORY_HANDLE_INIT, MEMORY_HANDLE_TYPE
from verify.errors import ToolError

# --- the schema ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of a mapping in a rules file: its type (see TYPES) and whether it must be there."""

    type: str
    required: bool = False
    schema: str | None = None  # a mapping checked against SCHEMA[schema]


TYPES = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "list": "a list",
    "dict": "a mapping",
    "scalar": "a string, a number or true/false",
    "str_list": "a list of strings",
    "int_list": "a list of integers",
    "mapping_list": "a mapping or a list of mappings",
}


def _has_type(value: Any, type_: str) -> bool:
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "list":
        return isinstance(value, list)
    if type_ == "dict":
        return isinstance(value, dict)
    if type_ == "scalar":
        return isinstance(value, (str, int, float, bool))
    if type_ == "str_list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if type_ == "int_list":
        return isinstance(value, list) and all(_has_type(item, "int") for item in value)
    if type_ == "mapping_list":
        return isinstance(value, dict) or (isinstance(value, list) and all(isinstance(item, dict) for item in value))
    raise AssertionError(type_)


SCHEMA: dict[str, dict[str, Key]] = {
    "file": {"migration": Key("dict", True), "description": Key("str"), "options": Key("dict"),
             "test_prelude": Key("dict"), "rules": Key("list", True), "advisories": Key("list")},
    "migration": {"from": Key("str", True), "to": Key("str", True)},
    "option": {"default": Key("scalar", True), "description": Key("str", True), "decisions": Key("dict")},
    "test_prelude": {"c": Key("str"), "c++": Key("str")},
    "rule": {"id": Key("str", True), "kind": Key("str", True), "description": Key("str", True),
             "match": Key("dict", True), "fix": Key("str"), "action": Key("str"), "guidance": Key("str"),
             "opt_in": Key("bool"), "options": Key("str_list"), "tests": Key("dict"), "params": Key("dict"),
             "handle": Key("dict"), "mined": Key("bool"), "provenance": Key("list")},  # mined: migrate/mine/
    "handle": {"type": Key("str", True), "init": Key("str", True)},
    "insert_advisory": {"id": Key("str", True), "message": Key("str", True)},
    "match": {"header": Key("str", True), "function": Key("str"), "field": Key("str"), "when": Key("str")},
    "tests": {"invalid": Key("list"), "valid": Key("list")},
    "case": {"name": Key("str"), "code": Key("str", True), "output": Key("str"), "options": Key("dict"),
             "enable": Key("str_list"), "lang": Key("str"), "manual": Key("bool"), "prelude": Key("bool")},
    "advisory": {"id": Key("str", True), "description": Key("str", True), "match": Key("mapping_list", True),
                 "message": Key("str"), "messages": Key("list"), "when": Key("dict"), "report_as": Key("str"),
                 "once": Key("str"), "unless_enabled": Key("str_list"), "tests": Key("dict")},
    "advisory_match": {"header": Key("str", True), "function": Key("str"), "field": Key("str"),
                       "arguments": Key("int_list")},
    "advisory_message": {"when": Key("dict"), "message": Key("str", True), "report_as": Key("str"),
                         "once": Key("str")},
    "advisory_when": {"argument": Key("int"), "equals": Key("scalar"), "assigned": Key("bool"), "matches": Key("str"),
                      "integer_at_least": Key("int"), "integers": Key("dict"), "argument_count": Key("int"),
                      "in_function_matching": Key("str"), "not_bounded_in_function": Key("str")},
    "advisory_tests": {"flagged": Key("list"), "quiet": Key("list")},
    "fold_row": {"when": Key("dict"), "value": Key("str", True)},
}  # fmt: skip


@dataclass(frozen=True)
class KindSpec:
    """What a rule kind needs from the file; the engine has one handler per kind (handlers.HANDLERS)."""

    summary: str
    needs_fix: bool = False
    needs_guidance: bool = False
    hoists_handle: bool = False  # the rule may say which handle it hoists (`handle: {type, init}`)
    folds: bool = False  # a value map: params true/false (+ a fix for other values), or several fields folded
    # what the collector gathers for it besides call and field sites: its calls apart (checks of the return code:
    # not call sites, not listed in skipped code), the variables of its matched struct (set-ups)
    calls_apart: bool = False
    setups: bool = False
    params: dict[str, Key] = field(default_factory=dict)
    when: frozenset[str] = frozenset()  # values `match.when` may take


KIND_SPECS: dict[str, KindSpec] = {
    "memory_call": KindSpec(
        "a call moved onto a handle taken from its first argument (`handle`: its type and initialiser, default "
        "the context's memory); the handle hoisted once per function",
        needs_fix=True,
        hoists_handle=True,
    ),
    "no_successor": KindSpec(
        "removed with nothing to call instead: the statement removed (action: remove_statement) or listed",
        needs_guidance=True,
    ),
    "manual_call": KindSpec(
        "a call that needs a person (signature or meaning changed): listed, never rewritten",
        needs_guidance=True,
        when=frozenset({"const_argument"}),
    ),
    "append_argument": KindSpec(
        "a call rewritten from a template over its arguments ({name}, {args[i]}, {rest}): "
        "renamed, arguments appended, dropped or reordered",
        needs_fix=True,
    ),
    "bool_field_to_enum": KindSpec(
        "a struct field renamed and retyped with a value map: one bool field to an enum (params true/false, fix for "
        "any other value), or several bool fields folded into one (params fold + values); params.type: the new field's "
        "type; params.read_note: what a read of the old field is told about the new one (e.g. its values)",
        params={
            "member": Key("str", True),
            "true": Key("str"),
            "false": Key("str"),
            "fold": Key("dict"),
            "values": Key("list"),
            "type": Key("str"),
            "read_note": Key("str"),
        },
        folds=True,
    ),  # fmt: skip
    "params_insert": KindSpec(
        "opt-in: an assignment added where a params struct is set up (declared from params.setup_call, default the "
        "struct's defaults function), params.advisory {id, message} reported beside each",
        needs_fix=True,
        params={"after": Key("str", True), "member": Key("str"), "value": Key("str"), "unless_set": Key("str_list"),
                "setup_call": Key("str"), "advisory": Key("dict", schema="insert_advisory")},
        setups=True,
    ),  # fmt: skip
    "decode_error": KindSpec("checks of the matched call's return code → a switch on the code, rendered from "
                             "templates/", calls_apart=True),
}
# Each kind is a handler in the engine; a rule of another kind is an error in the rules file.
KINDS = set(KIND_SPECS)
# Generic names for kinds whose first name said what they were written for: a file may use either.
KIND_ALIASES = {"call_rewrite": "append_argument", "field_to_enum": "bool_field_to_enum"}
ACTIONS = {"remove_statement", "manual"}
# libyaml's loader when present: the pure-Python one takes ~0.4 s on the rules file.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)")
IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
# Placeholders a fix template may use besides option names: see engine.render_fix.
FIX_NAMES = {"mem", "ctx", "args", "rest", "name", "target", "value", "params", "expr"}


class RuleError(ToolError):
    """The rules file is malformed; the message names the file and the rule."""


@dataclass(frozen=True)
class Match:
    """The declaration a site must resolve to: `function` (+ header) or `field` (struct.member, + header)."""

    header: str
    function: str | None = None
    field: str | None = None
    when: str | None = None  # an extra condition the kind understands (e.g. "const_argument")

    @property
    def struct(self) -> str | None:
        return self.field.split(".")[0] if self.field else None

    @property
    def member(self) -> str | None:
        return self.field.split(".")[1] if self.field else None

    @property
    def name(self) -> str:
        return self.function or self.member or ""


@dataclass(frozen=True)
class RuleCase:
    """A test case beside a rule: `code` rewritten must give `output` (None: left alone)."""

    rule: str
    name: str
    code: str
    output: str | None
    options: dict[str, Any] = field(default_factory=dict)
    enable: tuple[str, ...] = ()
    lang: str = "c++"
    manual: bool = False  # the rule must also list a manual item for this code
    prelude: bool = True  # prepend the rules file's test_prelude (llama.h) to code and output


@dataclass(frozen=True)
class HandleSpec:
    """What a `memory_call` rule hoists: `{type} name = {init};`, {ctx} in `init` being the call's first argument as
    written. Without `handle:` in the rule, llama.cpp's memory handle (defaults.py)."""

    type: str = MEMORY_HANDLE_TYPE
    init: str = MEMORY_HANDLE_INIT

    def inline(self, ctx_text: str) -> str:
        return self.init.format_map({"ctx": ctx_text})

    @property
    def names(self) -> set[str]:
        """The identifiers the handle writes (target API: errors about them in a re-parse mean "migrated")."""
        return set(IDENTIFIER.findall(f"{self.type} {self.init.replace('{ctx}', '')}"))


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    description: str
    match: Match
    fix: str | None = None
    action: str | None = None
    guidance: str | None = None
    opt_in: bool = False
    options: tuple[str, ...] = ()
    invalid: tuple[RuleCase, ...] = ()
    valid: tuple[RuleCase, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific data (e.g. the enum values of a field)
    handle: HandleSpec = HandleSpec()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.match.name,)


@dataclass(frozen=True)
class AdvisoryMatch:
    """One declaration an advisory watches, with the arguments its conditions read there (a call's sequence ids sit
    at different positions in different functions) and the rule of the same file that rewrites those calls."""

    match: Match
    arguments: tuple[int, ...] = ()
    rule: str | None = None  # the id reported by a message with `report_as: rule`


@dataclass(frozen=True)
class AdvisoryMessage:
    """One message of an advisory: reported where `when` holds (besides the advisory's own `when`); the first of an
    advisory's messages that holds for a value wins. `report_as: rule` reports it under the id of the rule that
    rewrites the call (the advisory is about that rule's calls); `once: function` reports it once per function."""

    message: str
    when: dict[str, Any] = field(default_factory=dict)
    report_as: str = "advisory"
    once: str = "line"


@dataclass(frozen=True)
class AdvisoryRule:
    """Code that compiles at the target and behaves differently: a use of one of `matches` (a call of a function, or
    an assignment / read of a field), optionally only when `when` holds; reported with the first of `messages` whose
    own condition holds, never rewritten; silent while a rule of `unless_enabled` is active (it removes the cause).
    Test cases: `flagged` snippets must raise it, `quiet` ones must not."""

    id: str
    description: str
    matches: tuple[AdvisoryMatch, ...]
    messages: tuple[AdvisoryMessage, ...]
    when: dict[str, Any] = field(default_factory=dict)  # see ADVISORY_CONDITIONS
    unless_enabled: tuple[str, ...] = ()
    flagged: tuple[RuleCase, ...] = ()
    quiet: tuple[RuleCase, ...] = ()

    @property
    def match(self) -> Match:
        """The first declaration (what a partial step narrows advisories by, with the rules it keeps)."""
        return self.matches[0].match

    @property
    def names(self) -> set[str]:
        """Every function or field it watches."""
        return {m.match.name for m in self.matches}

    @property
    def reported_ids(self) -> set[str]:
        """The ids its findings carry: its own, and the rules' whose calls it reports as theirs."""
        ids = {self.id} if any(m.report_as == "advisory" for m in self.messages) else set()
        if any(m.report_as == "rule" for m in self.messages):
            ids |= {m.rule or self.id for m in self.matches}
        return ids


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    description: str
    # what the plan says, by value, when a rule that reads the option made an edit (e.g. what clearing costs)
    decisions: dict[Any, str] = field(default_factory=dict)


@dataclass
class RuleSet:
    path: Path
    from_version: str
    to_version: str
    rules: list[Rule]
    options: dict[str, Option]
    test_prelude: dict[str, str]
    advisories: list[AdvisoryRule] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.from_version} → {self.to_version}"

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise RuleError(f"no rule {rule_id!r} in {self.path}; known: {', '.join(r.id for r in self.rules)}")

    def active(self, enabled: set[str] | frozenset[str] = frozenset()) -> list[Rule]:
        """Rules that run: all but the opt-in ones, plus the opt-in ones enabled by id (an unknown id is refused,
        naming the opt-in ids there are: a typo must not silently turn a rule off)."""
        unknown = sorted(set(enabled) - {r.id for r in self.rules})
        if unknown:
            opt_in = ", ".join(r.id for r in self.rules if r.opt_in) or "none"
            raise RuleError(f"enable: no rule {', '.join(map(repr, unknown))} in {self.path.name} "
                            f"({self.from_version} → {self.to_version}); the opt-in rules there are: {opt_in} — fix "
                            "`enable` in llama-migrate.toml or --enable")  # fmt: skip
        return [r for r in self.rules if not r.opt_in or r.id in enabled]

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Option values: defaults overridden by `given` (strings from the command line are converted)."""
        values = {name: option.default for name, option in self.options.items()}
        for name, value in given.items():
            if name not in self.options:
                raise RuleError(f"unknown option {name!r}; known: {', '.join(sorted(self.options))}")
            try:
                values[name] = _convert(value, self.options[name].default)
            except RuleError as exc:
                raise RuleError(f"option {name}: {exc}") from None
        return values

    def names(self) -> set[str]:
        """Every identifier a rule matches (for a cheap text pre-filter of files)."""
        return {rule.match.name for rule in self.rules}

    def covered(self) -> set[str]:
        """What these rules handle, spelled as the API diff names it: function names and "struct.field" (hook for
        migrate.apidiff.cross_reference's `covered`: a use of anything else removed or changed is manual)."""
        return {rule.match.function or rule.match.field or "" for rule in self.rules} - {""}


def _convert(value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise RuleError(f"expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise RuleError(f"expected an integer, got {value!r}") from None
    return value


# --- loading and checking --------------------------------------------------------------------------------------


def _check(data: Any, schema: str, where: str) -> dict[str, Any]:
    """`data` as a mapping of `SCHEMA[schema]`: every key known, of its type, the required ones there (an empty
    string or null counts as missing)."""
    keys = SCHEMA[schema]
    if not isinstance(data, dict):
        raise RuleError(f"{where}: expected a mapping, got {_shown(data)}")
    for key, value in data.items():
        name = str(key).lower() if isinstance(key, bool) else str(key)
        spec = keys.get(name)
        if spec is None and schema == "file" and name.startswith("x-"):
            continue  # an extension key: holds YAML anchors that rules refer to (`params: *load-mode`)
        if spec is None:
            close = difflib.get_close_matches(name.replace("-", "_"), list(keys), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RuleError(f"{where}: unknown key {name!r}{hint}; allowed: {', '.join(keys)}")
        if value is not None and value != "" and not _has_type(value, spec.type):
            raise RuleError(f"{where}: key {name!r} must be {TYPES[spec.type]}, got {_shown(value)}")
    for name, spec in keys.items():
        if spec.required and data.get(name) in (None, ""):
            raise RuleError(f"{where}: missing {name!r}")
    return data


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:39] + '…'} ({type(value).__name__})"


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise RuleError(f"{where}: missing {key!r}")
    return data[key]


def _cases(raw: dict[str, Any], rule_id: str, where: str, kind: str, options: dict[str, Option],
           rule_ids: set[str]) -> tuple[RuleCase, ...]:  # fmt: skip
    cases = []
    entries = raw.get(kind) or []
    for number, case in enumerate(entries, start=1):
        at = f"{where}: tests.{kind}[{number}]"
        _check(case, "case", at)
        name = case.get("name") or f"{kind} {number}"
        code = case["code"]
        output = case.get("output") if kind == "invalid" else None
        if kind == "invalid" and output is None:
            raise RuleError(f"{at}: missing 'output'")
        if kind != "invalid" and case.get("output") is not None:
            raise RuleError(f"{at}: key 'output' belongs to `invalid` cases only")
        lang = case.get("lang", "c++")
        if lang not in ("c", "c++"):
            raise RuleError(f"{at}: key 'lang' must be c or c++, got {lang!r}")
        for option in case.get("options") or {}:
            if option not in options:
                raise RuleError(f"{at}: key 'options': option {option!r} does not exist; declared: "
                                f"{', '.join(sorted(options)) or 'none'}")  # fmt: skip
        for enabled in case.get("enable") or ():
            if enabled not in rule_ids:
                raise RuleError(f"{at}: key 'enable': no rule {enabled!r} in this file")
        cases.append(RuleCase(rule_id, name, code, output, dict(case.get("options") or {}),
                              tuple(case.get("enable") or ()), lang, bool(case.get("manual", False)),
                              bool(case.get("prelude", True))))  # fmt: skip
    return tuple(cases)


def _match(raw: Any, where: str) -> Match:
    _check(raw, "match", f"{where}: match")
    match = Match(header=raw["header"], function=raw.get("function"), field=raw.get("field"), when=raw.get("when"))
    if bool(match.function) == bool(match.field):
        raise RuleError(f"{where}: match needs exactly one of 'function' or 'field'")
    if match.field and match.field.count(".") != 1:
        raise RuleError(f"{where}: key 'match.field' must be struct.member, got {match.field!r}")
    return match


def _rule(raw: Any, path: Path, options: dict[str, Option], rule_ids: set[str]) -> Rule:
    rule_id = raw.get("id") if isinstance(raw, dict) else None
    where = f"{path}: rule {rule_id}" if isinstance(rule_id, str) and rule_id else f"{path}: a rule"
    _check(raw, "rule", where)
    kind = KIND_ALIASES.get(raw["kind"], raw["kind"])
    if kind not in KINDS:
        known = sorted(KINDS | set(KIND_ALIASES))
        raise RuleError(f"{where}: key 'kind': unknown kind {raw['kind']!r}; known: {', '.join(known)}")
    spec = KIND_SPECS[kind]
    match = _match(raw["match"], where)
    if match.when is not None and match.when not in spec.when:
        allowed = ", ".join(sorted(spec.when)) or "none for this kind"
        raise RuleError(f"{where}: key 'match.when': {match.when!r} is not a condition kind {kind} knows ({allowed})")
    fix = raw.get("fix")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise RuleError(f"{where}: key 'action': unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    rule_options = tuple(raw.get("options") or ())
    for name in rule_options:
        if name not in options:
            raise RuleError(f"{where}: key 'options': option {name!r} is not declared under 'options'")
    if fix:
        for name in PLACEHOLDER.findall(fix):
            if name not in FIX_NAMES and name not in rule_options:
                raise RuleError(f"{where}: key 'fix' uses {{{name}}}, neither a known placeholder nor one of its "
                                "options")  # fmt: skip
    params = _params(raw.get("params") or {}, kind, where)
    folding = "fold" in params
    if spec.needs_fix and not fix:
        raise RuleError(f"{where}: kind {kind} needs a 'fix'")
    if spec.folds and not folding and not fix:
        raise RuleError(f"{where}: kind {kind} needs a 'fix' (the value for an expression)")
    if spec.needs_guidance and not raw.get("guidance"):
        raise RuleError(f"{where}: kind {kind} needs 'guidance' (what the person should do)")
    if folding and match.member not in params["fold"]:
        raise RuleError(f"{where}: key 'params.fold' must name the matched field {match.member!r} too")
    tests = _check(raw.get("tests") or {}, "tests", f"{where}: tests")
    handle = _handle(raw.get("handle"), spec, kind, where)
    return Rule(
        id=rule_id,
        kind=kind,
        description=" ".join(str(raw["description"]).split()),
        match=match,
        fix=fix,
        action=action,
        guidance=" ".join(str(raw["guidance"]).split()) if raw.get("guidance") else None,
        opt_in=bool(raw.get("opt_in", False)),
        options=rule_options,
        invalid=_cases(tests, rule_id, where, "invalid", options, rule_ids),
        valid=_cases(tests, rule_id, where, "valid", options, rule_ids),
        params=params,
        handle=handle,
    )


def _handle(raw: Any, spec: KindSpec, kind: str, where: str) -> HandleSpec:
    if not raw:
        return HandleSpec()
    if not spec.hoists_handle:
        raise RuleError(f"{where}: key 'handle': kind {kind} hoists no handle")
    _check(raw, "handle", f"{where}: handle")
    for name in PLACEHOLDER.findall(raw["init"]):
        if name != "ctx":
            raise RuleError(f"{where}: key 'handle.init' uses {{{name}}}; only {{ctx}} (the first argument) is known")
    return HandleSpec(raw["type"], raw["init"])


def _decisions(spec: dict[str, Any], where: str) -> dict[Any, str]:
    """`decisions: {value: text}`, each value of the option's type."""
    decisions = {}
    for value, text in (spec.get("decisions") or {}).items():
        if not isinstance(text, str):
            raise RuleError(f"{where}: key 'decisions.{value}' must be a string, got {_shown(text)}")
        try:
            decisions[_convert(value, spec["default"])] = " ".join(text.split())
        except RuleError as exc:
            raise RuleError(f"{where}: key 'decisions': {exc}") from None
    return decisions


def _params(raw: Any, kind: str, where: str) -> dict[str, Any]:
    spec = KIND_SPECS[kind]
    if raw and not spec.params:
        raise RuleError(f"{where}: key 'params': kind {kind} takes no params")
    if not spec.params:
        return {}
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: key 'params' must be a mapping, got {_shown(raw)}")
    params = {str(key).lower() if isinstance(key, bool) else str(key): value for key, value in raw.items()}
    for key, value in params.items():
        if key not in spec.params:
            close = difflib.get_close_matches(key, list(spec.params), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RuleError(f"{where}: unknown key 'params.{key}'{hint}; kind {kind} takes: "
                            f"{', '.join(spec.params)}")  # fmt: skip
        if value is not None and not _has_type(value, spec.params[key].type):
            raise RuleError(f"{where}: key 'params.{key}' must be {TYPES[spec.params[key].type]}, got {_shown(value)}")
        if value is not None and spec.params[key].schema:
            params[key] = dict(_check(value, spec.params[key].schema, f"{where}: params.{key}"))
    if spec.folds:
        _fold_params(params, where)
    for key, item in spec.params.items():
        if item.required and key not in params:
            raise RuleError(f"{where}: kind {kind} needs params.{key}")
    return params


def _fold_params(params: dict[str, Any], where: str) -> None:
    """`fold` (field -> its value when not assigned) with `values` (rows {when: {field: bool}, value}), or the
    single-field form's `true` and `false`."""
    if "fold" not in params:
        for key in ("true", "false"):
            if key not in params:
                raise RuleError(f"{where}: kind bool_field_to_enum needs params.{key} (or params.fold + values)")
        if "values" in params:
            raise RuleError(f"{where}: key 'params.values' belongs with params.fold")
        return
    fold = params["fold"]
    for name, default in fold.items():
        if not isinstance(default, bool):
            raise RuleError(f"{where}: key 'params.fold.{name}' must be true or false (its value when not "
                            f"assigned), got {_shown(default)}")  # fmt: skip
    rows = params.get("values")
    if not rows:
        raise RuleError(f"{where}: key 'params.fold' needs params.values (rows of when/value)")
    for number, row in enumerate(rows, start=1):
        at = f"{where}: params.values[{number}]"
        _check(row, "fold_row", at)
        for name, value in (row.get("when") or {}).items():
            if name not in fold:
                raise RuleError(f"{at}: key 'when.{name}': not a field of params.fold ({', '.join(fold)})")
            if not isinstance(value, bool):
                raise RuleError(f"{at}: key 'when.{name}' must be true or false, got {_shown(value)}")
    if rows[-1].get("when"):
        raise RuleError(f"{where}: key 'params.values': the last row must have no 'when' (the value otherwise)")


# What an advisory's `when` may say (rule_advisories.py evaluates them). A call's value is one of its arguments
# (`when.argument`, or each of a match entry's `arguments`; a braced list `{a, b}` gives each element); a field's
# is the value assigned to it.
ADVISORY_CONDITIONS = {
    "argument": "the argument the value conditions read",
    "equals": "the value is written as this",
    "assigned": "the field is written (an assignment or a designator)",
    "matches": "the value, as written, matches this regular expression",
    "integer_at_least": "the value is written as an integer of at least this ({value} and {count}, one more, in the "
    "message)",
    "integers": "{i: [n, ...]}: argument i is written as one of these integers (each listed argument)",
    "argument_count": "the call has this many arguments",
    "in_function_matching": "the function holding the use matches this regular expression somewhere",
    "not_bounded_in_function": "the value is not written as an integer and the function holding it never matches "
    "this regular expression (nothing there visibly bounds it; {function} in the message)",
}
VALUE_CONDITIONS = {"equals", "matches", "integer_at_least", "not_bounded_in_function"}
CALL_CONDITIONS = {"argument", "integers", "argument_count"}
REGEX_CONDITIONS = {"matches", "in_function_matching", "not_bounded_in_function"}
# {argument}: the value on one line; {value}, {count}: its integer and one more; {function}: the holding function.
MESSAGE_PLACEHOLDERS = {"argument", "value", "count", "function"}
REPORT_AS = {"advisory", "rule"}
ONCE = {"line", "function"}


def _advisory(raw: Any, path: Path, rules: list[Rule]) -> AdvisoryRule:
    advisory_id = raw.get("id") if isinstance(raw, dict) else None
    where = (
        f"{path}: advisory {advisory_id}" if isinstance(advisory_id, str) and advisory_id else f"{path}: an advisory"
    )
    _check(raw, "advisory", where)
    matches = _advisory_matches(raw["match"], where, rules)
    when = _advisory_when(raw.get("when") or {}, f"{where}: when", matches, top=True)
    messages = _advisory_messages(raw, where, matches)
    rule_ids = {r.id for r in rules}
    for rule_id in raw.get("unless_enabled") or ():
        if rule_id not in rule_ids:
            raise RuleError(f"{where}: key 'unless_enabled': no rule {rule_id!r} in this file")
    _needs_a_value(when, messages, matches, where)
    tests = _check(raw.get("tests") or {}, "advisory_tests", f"{where}: tests")
    cases = {}
    for kind in ("flagged", "quiet"):
        renamed = {"invalid" if kind == "flagged" else "valid": [
            {**case, "output": case.get("code")} if kind == "flagged" and isinstance(case, dict) else case
            for case in tests.get(kind) or []]}  # fmt: skip
        cases[kind] = _cases(renamed, advisory_id, where, "invalid" if kind == "flagged" else "valid", {}, rule_ids)
    return AdvisoryRule(advisory_id, " ".join(raw["description"].split()), matches, messages, dict(when),
                        tuple(raw.get("unless_enabled") or ()), cases["flagged"], cases["quiet"])  # fmt: skip


def _advisory_matches(raw: Any, where: str, rules: list[Rule]) -> tuple[AdvisoryMatch, ...]:
    """`match`: one declaration or a list of them, all functions or all fields."""
    entries = [raw] if isinstance(raw, dict) else list(raw)
    if not entries:
        raise RuleError(f"{where}: key 'match' lists no declaration")
    found = []
    for number, entry in enumerate(entries, start=1):
        at = f"{where}: match" if isinstance(raw, dict) else f"{where}: match[{number}]"
        _check(entry, "advisory_match", at)
        match = Match(header=entry["header"], function=entry.get("function"), field=entry.get("field"))
        if bool(match.function) == bool(match.field):
            raise RuleError(f"{at}: needs exactly one of 'function' or 'field'")
        if match.field and match.field.count(".") != 1:
            raise RuleError(f"{at}: key 'field' must be struct.member, got {match.field!r}")
        if entry.get("arguments") and not match.function:
            raise RuleError(f"{at}: key 'arguments' needs 'function'")
        rule = next((r.id for r in rules if match.function and (r.match.function, r.match.header) == (
            match.function, match.header)), None)  # fmt: skip
        found.append(AdvisoryMatch(match, tuple(entry.get("arguments") or ()), rule))
    if len({bool(m.match.function) for m in found}) != 1:
        raise RuleError(f"{where}: key 'match' mixes functions and fields; one advisory watches one or the other")
    return tuple(found)


def _advisory_when(raw: Any, where: str, matches: tuple[AdvisoryMatch, ...], top: bool) -> dict[str, Any]:
    when = dict(_check(raw, "advisory_when", where))
    calls = bool(matches[0].match.function)
    for key in sorted(CALL_CONDITIONS & set(when)):
        if not calls:
            raise RuleError(f"{where}: key {key!r} needs match.function")
    if "argument" in when and not top:
        raise RuleError(f"{where}: key 'argument' belongs in the advisory's own `when`")
    if "argument" in when and any(m.arguments for m in matches):
        raise RuleError(f"{where}: key 'argument': the match entries already say their 'arguments'")
    if "assigned" in when and calls:
        raise RuleError(f"{where}: key 'assigned' needs match.field")
    for key in sorted(REGEX_CONDITIONS & set(when)):
        try:
            re.compile(str(when[key]))
        except re.error as exc:
            raise RuleError(f"{where}: key {key!r} is not a regular expression ({exc})") from None
    for index, values in (when.get("integers") or {}).items():
        if not _has_type(index, "int") or not _has_type(values, "int_list"):
            raise RuleError(f"{where}: key 'integers' maps an argument index to a list of integers, got "
                            f"{_shown(index)}: {_shown(values)}")  # fmt: skip
    return when


def _advisory_messages(raw: dict[str, Any], where: str,
                       matches: tuple[AdvisoryMatch, ...]) -> tuple[AdvisoryMessage, ...]:  # fmt: skip
    """`message` (one) or `messages` (rows of when/message, the first that holds wins); `report_as` and `once` at the
    advisory's level are the rows' defaults."""
    if ("message" in raw) == ("messages" in raw):
        raise RuleError(f"{where}: needs exactly one of 'message' or 'messages'")
    defaults = {"report_as": raw.get("report_as", "advisory"), "once": raw.get("once", "line")}
    rows = [{"message": raw["message"]}] if "message" in raw else raw["messages"]
    found = []
    for number, row in enumerate(rows, start=1):
        at = where if "message" in raw else f"{where}: messages[{number}]"
        _check(row, "advisory_message", at)
        settings = {**defaults, **{k: row[k] for k in ("report_as", "once") if k in row}}
        if settings["report_as"] not in REPORT_AS:
            raise RuleError(f"{at}: key 'report_as' must be one of {', '.join(sorted(REPORT_AS))}, got "
                            f"{settings['report_as']!r}")  # fmt: skip
        if settings["report_as"] == "rule" and not any(m.rule for m in matches):
            raise RuleError(f"{at}: key 'report_as': no rule of this file rewrites the calls it watches")
        if settings["once"] not in ONCE:
            raise RuleError(f"{at}: key 'once' must be one of {', '.join(sorted(ONCE))}, got {settings['once']!r}")
        message = " ".join(str(row["message"]).split())
        for name in PLACEHOLDER.findall(message):
            if name not in MESSAGE_PLACEHOLDERS:
                raise RuleError(f"{at}: key 'message' uses {{{name}}}; known: "
                                f"{', '.join(sorted(MESSAGE_PLACEHOLDERS))}")  # fmt: skip
        when = _advisory_when(row.get("when") or {}, f"{at}: when", matches, top=False)
        found.append(AdvisoryMessage(message, when, settings["report_as"], settings["once"]))
    if any(row.when == {} for row in found[:-1]):
        raise RuleError(f"{where}: key 'messages': only the last row may have no 'when' (the message otherwise)")
    return tuple(found)


def _needs_a_value(when: dict[str, Any], messages: tuple[AdvisoryMessage, ...], matches: tuple[AdvisoryMatch, ...],
                   where: str) -> None:  # fmt: skip
    """A condition on a call's value needs to know which argument is the value."""
    used = VALUE_CONDITIONS & (set(when) | {key for row in messages for key in row.when})
    if used and matches[0].match.function and "argument" not in when and not all(m.arguments for m in matches):
        raise RuleError(f"{where}: key 'when.{sorted(used)[0]}' reads an argument: say which ('when.argument', or "
                        "'arguments' in every match entry)")  # fmt: skip


def _duplicates(entries: list[Any], path: Path, what: str) -> set[str]:
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(entry_id, str):
            continue
        if entry_id in seen:
            raise RuleError(f"{path}: {what} {entry_id}: key 'id': {entry_id!r} is used twice ({what}s "
                            f"{seen[entry_id]} and {number}); ids must be unique in a file")  # fmt: skip
        seen[entry_id] = number
    return set(seen)


def load_rules(path: Path) -> RuleSet:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except UnicodeDecodeError as exc:  # a binary file given as rules (--rules /bin/true)
        raise RuleError(f"{path}: not a rules file (not UTF-8 text, byte {exc.start}); pass a rules .yaml") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path}: cannot read rules ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise RuleError(f"{path}: expected a mapping at the top level")
    _check(raw, "file", str(path))
    step = _check(raw["migration"], "migration", f"{path}: migration")
    options = {}
    for name, spec in (raw.get("options") or {}).items():
        _check(spec, "option", f"{path}: options.{name}")
        options[name] = Option(name, spec["default"], " ".join(str(spec["description"]).split()),
                               _decisions(spec, f"{path}: options.{name}"))  # fmt: skip
    prelude = _check(raw.get("test_prelude") or {}, "test_prelude", f"{path}: test_prelude")
    rule_ids = _duplicates(raw["rules"], path, "rule")
    rules = [_rule(entry, path, options, rule_ids) for entry in raw["rules"]]
    advisory_ids = _duplicates(raw.get("advisories") or [], path, "advisory")
    clash = sorted(rule_ids & advisory_ids)
    if clash:
        raise RuleError(f"{path}: advisory {clash[0]}: key 'id': {clash[0]!r} is also a rule's id")
    advisories = [_advisory(entry, path, rules) for entry in raw.get("advisories") or []]
    return RuleSet(
        path,
        str(step["from"]),
        str(step["to"]),
        rules,
        options,
        dict(prelude),
        advisories,
    )


def rules_dir() -> Path:
    return data_dir("rules")


def rule_files(directory: Path | None = None) -> list[RuleSet]:
    """Every rules file of a folder (default: the shipped rules/), ordered by its step's starting build."""
    folder = directory or rules_dir()
    if not folder.is_dir():
        raise RuleError(f"{folder}: no such rules folder")
    sets = [load_rules(path) for path in sorted(folder.glob("*.y*ml"))]
    if not sets:  # an empty folder must not plan silently with no rules at all
        raise RuleError(f"{folder}: no rules files (*.yaml) in this folder; give a rules file or the folder of them")
    return sorted(sets, key=lambda r: (build_number(r.from_version), build_number(r.to_version)))


def build_number(tag: str) -> int:
    """b7785 -> 7785; a step's ends must be build tags."""
    match = re.fullmatch(r"b(\d+)", tag)
    if match is None:
        raise RuleError(f"{tag!r} is not a build tag (bNNNN): steps and --from/--to are compared by build number")
    return int(match.group(1))


def find_rules(from_version: str, to_version: str, directory: Path | None = None) -> RuleSet:
    """The rules file for one migration step (`migration: {from, to}` inside the file decides)."""
    folder = directory or rules_dir()
    available = []
    for path in sorted(folder.glob("*.y*ml")):
        ruleset = load_rules(path)
        if (ruleset.from_version, ruleset.to_version) == (from_version, to_version):
            return ruleset
        available.append(f"{ruleset.from_version} → {ruleset.to_version}")
    raise RuleError(
        f"no rules for {from_version} → {to_version} in {folder}; available: {', '.join(available) or 'none'} — "
        "pick --from/--to from those (a stand-in build is found by the tag asked for), or add a rules file there"
    )
