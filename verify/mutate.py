"""Mutation testing of a consumer's shim: does the checklist catch small, realistic bugs in *this* code?

Mutants are made from the shim's own libclang parse (no regular expressions over C++), in the functions the
checklist can reach: the C API functions bound to its operations (verify/binding.py) and every function of the
same file they call, directly or through the types they use. Seven original operators, each the kind of slip an
upgrade introduces (the realistic families, a person's slips rather than operator noise, are in
verify/mutate_realistic.py: flipped boolean and swapped same-typed arguments of llama.cpp calls, a field set from
the wrong variable, a free removed on one path, a pointer handed out into a local):

- `comparison`: a comparison operator swapped (`<` ↔ `<=`, `>` ↔ `>=`, `==` ↔ `!=`);
- `constant`: ±1 on an integer constant;
- `position`: ±1 on position/length arithmetic (a call argument bound to a position, a length or an index
  parameter of a llama.cpp / common function; a value assigned to a position or length variable);
- `memory_call`: a llama.cpp memory/sequence call deleted (`llama_memory_*`, `llama_kv_self_*`);
- `params_field`: an assignment to a field of a params struct dropped (`ctx_params.n_threads = ...`);
- `loop_exit`: a `break` or `return` removed inside a generation loop (one that decodes or samples);
- `argument_swap`: two adjacent arguments of the same type swapped in a call.

Each mutant is built (the caller's `build` callable: shim only, llama.cpp reused) and run through the checklist
with crash isolation (verify.runner.run_checks), stopping at the first check that passed on the unmutated build
and does not on the mutant (killed). A mutant that does not compile is counted apart; one whose library is byte
for byte the unmutated one is equivalent; the consumer can mark others equivalent in its config (`mutants`, a list
of {id, reason}; `id` may be a glob). Score = killed / (compiled - equivalent). Every survivor is listed with
file:line, the mutation and the check nearest to the code it changed (a heuristic: by what the code touches).

`verify` imports nothing from `migrate`: building is the caller's (migrate/mutation.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import clang.cindex as ci

from verify import mutate_realistic as realistic
from verify.checks import PASSED, CheckResult
from verify.clangsetup import index
from verify.errors import ToolError
from verify.outcomes import CheckStatus, MutantStatus
from verify.runner import run_checks
from verify.session import Options, Target

K = ci.CursorKind
KINDS: dict[str, str] = {
    "comparison": "comparison operator swapped",
    "constant": "±1 on an integer constant",
    "position": "±1 on position/length arithmetic",
    "memory_call": "llama.cpp memory/sequence call deleted",
    "params_field": "assignment to a params field dropped",
    "loop_exit": "break/return removed in a generation loop",
    "argument_swap": "same-type arguments swapped",
}
ORIGINAL_KINDS = tuple(KINDS)  # one sampling stratum: a seeded sample of them is the same as before the families below
KINDS |= realistic.KINDS  # the realistic families (verify/mutate_realistic.py), each its own stratum
SWAPPED = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
FUNCTION_KINDS = (K.FUNCTION_DECL, K.CXX_METHOD, K.CONSTRUCTOR, K.DESTRUCTOR, K.FUNCTION_TEMPLATE,
                  K.CONVERSION_FUNCTION)  # fmt: skip
LOOP_KINDS = (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT, K.CXX_FOR_RANGE_STMT)
MEMORY_CALL = re.compile(r"^llama_(?:memory|kv_self|kv_cache)_\w+$")
API_CALL = re.compile(r"^(?:llama|common|ggml)_\w+$")
POSITION_PARAM = re.compile(r"^(?:pos|p0|p1|n_past|idx|i|n_tokens|n_tokens_max|len|length|text_len|n|size|n_max)$")
POSITION_VAR = re.compile(r"(?:^|_)(?:pos|past|len|length|prefix_len|n_prompt|n_suffix|n_tokens|n_generated)$")
GENERATION_TOKEN = re.compile(r"decode|sample")
# a function or lambda that runs one step of generation (samples, decides whether a slot is done): its returns are
# a generation loop's exits
STEP_NAME = re.compile(r"sample(?!r)|step")
INT_LITERAL = re.compile(r"^(0[xX][0-9a-fA-F]+|[1-9][0-9]*|0)([uUlL]*)$")


class MutateError(ToolError):
    """The shim cannot be mutated (not parsed, no function reached) or the unmutated build fails."""


# --- mutants ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One small change of one source file: bytes [start, end) replaced."""

    file: str  # relative to the consumer root
    function: str  # the function (or method) it is in
    line: int
    column: int
    kind: str
    description: str  # `before` → `after`
    start: int
    end: int
    replacement: str

    @property
    def id(self) -> str:
        """Stable within an unchanged file; globs over it (`file:function:*`) mark a whole function."""
        return f"{self.file}:{self.function}:{self.line}:{self.column}:{self.kind}:{self.replacement}"

    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"id": self.id}


def _offset(location: ci.SourceLocation) -> int:
    return int(location.offset)


def _text(source: bytes, cursor: ci.Cursor) -> str:
    return source[_offset(cursor.extent.start) : _offset(cursor.extent.end)].decode(errors="replace")


def _in_file(cursor: ci.Cursor, path: str) -> bool:
    loc = cursor.extent.start
    return loc.file is not None and loc.file.name == path and cursor.extent.end.file is not None \
        and cursor.extent.end.file.name == path  # fmt: skip


def _children(cursor: ci.Cursor) -> list[ci.Cursor]:
    return list(cursor.get_children())


def _callee(call: ci.Cursor) -> ci.Cursor | None:
    ref = call.referenced
    return ref if ref is not None and ref.kind in FUNCTION_KINDS else None


@dataclass
class Function:
    cursor: ci.Cursor
    name: str
    usr: str
    calls: set[str] = field(default_factory=set)  # USRs of functions and types it uses


def _functions(tu: ci.TranslationUnit, path: str) -> dict[str, Function]:
    """Every function defined in `path` (methods included), by USR; the types it names count as calls (their
    methods, destructors and call operators run without a call expression naming them)."""
    found: dict[str, Function] = {}

    def visit(cursor: ci.Cursor, owner: str | None) -> None:
        for child in cursor.get_children():
            if not _in_file(child, path):
                continue
            if child.kind in FUNCTION_KINDS and child.is_definition():
                name = child.spelling if owner is None else f"{owner}::{child.spelling}"
                found[child.get_usr()] = Function(child, name, child.get_usr())
            elif child.kind in (K.STRUCT_DECL, K.CLASS_DECL, K.CLASS_TEMPLATE) and child.is_definition():
                visit(child, child.spelling or owner)
                found.setdefault(child.get_usr(), Function(child, child.spelling, child.get_usr()))
            elif child.kind in (K.NAMESPACE, K.LINKAGE_SPEC, K.UNEXPOSED_DECL):
                visit(child, owner)

    visit(tu.cursor, None)
    for fn in found.values():
        if fn.cursor.kind in (K.STRUCT_DECL, K.CLASS_DECL, K.CLASS_TEMPLATE):
            # a type "calls" its methods: using the type runs them (constructors, destructor, operator())
            fn.calls |= {c.get_usr() for c in fn.cursor.get_children() if c.kind in FUNCTION_KINDS}
            continue
        for node in fn.cursor.walk_preorder():
            ref = node.referenced if node.kind in (K.CALL_EXPR, K.DECL_REF_EXPR, K.TYPE_REF, K.MEMBER_REF_EXPR) \
                else None  # fmt: skip
            if ref is None:
                continue
            if ref.kind in (K.STRUCT_DECL, K.CLASS_DECL, K.TYPEDEF_DECL, K.TYPE_ALIAS_DECL):
                decl = ref.underlying_typedef_type.get_declaration() if ref.kind != K.STRUCT_DECL and \
                    ref.kind != K.CLASS_DECL else ref  # fmt: skip
                fn.calls.add(decl.get_usr())
            elif ref.kind in FUNCTION_KINDS:
                definition = ref.get_definition()
                fn.calls.add((definition or ref).get_usr())
    return found


def reachable(functions: dict[str, Function], roots: set[str]) -> tuple[list[Function], list[str]]:
    """The functions `roots` (names) reach, and the names of the other functions defined in the file."""
    start = [usr for usr, fn in functions.items() if fn.cursor.spelling in roots and fn.cursor.kind in FUNCTION_KINDS]
    seen: set[str] = set()
    pending = list(start)
    while pending:
        usr = pending.pop()
        if usr in seen or usr not in functions:
            continue
        seen.add(usr)
        pending.extend(functions[usr].calls)
    inside = [functions[u] for u in seen if functions[u].cursor.kind in FUNCTION_KINDS]
    outside = sorted(fn.name for u, fn in functions.items() if u not in seen and fn.cursor.kind in FUNCTION_KINDS)
    return sorted(inside, key=lambda f: _offset(f.cursor.extent.start)), outside


class _Maker:
    """Walks one function's body and makes its mutants."""

    def __init__(self, source: bytes, rel: str, path: str, function: Function) -> None:
        self.source = source
        self.rel = rel
        self.path = path
        self.function = function
        self.out: list[Mutant] = []

    def add(self, start: int, end: int, kind: str, replacement: str, before: str) -> None:
        """Bytes [start, end) (`before`) replaced by `replacement`."""
        line, column = _line_col(self.source, start)
        description = f"`{_short(before)}` → `{_short(replacement)}`"
        self.out.append(Mutant(self.rel, self.function.name, line, column, kind, description, start, end,
                               replacement))  # fmt: skip

    @property
    def function_cursor(self) -> ci.Cursor:
        return self.function.cursor

    def token_at(self, start: int, spelling: str) -> bool:
        """The source really has `spelling` at `start` (not a macro expansion's token)."""
        return self.source[start : start + len(spelling)].decode(errors="replace") == spelling

    def run(self) -> list[Mutant]:
        body = next((c for c in self.function.cursor.get_children() if c.kind == K.COMPOUND_STMT), None)
        if body is not None:
            step = STEP_NAME.search(self.function.cursor.spelling) is not None
            self.walk(body, [], [body] if step else [])
        return self.out

    def walk(self, cursor: ci.Cursor, parents: list[ci.Cursor], loops: list[ci.Cursor]) -> None:
        if not _in_file(cursor, self.path):
            return
        kind = cursor.kind
        parent = parents[-1] if parents else None
        if kind == K.LAMBDA_EXPR:
            # a return or break in a lambda leaves the lambda, not an enclosing loop; a step lambda's returns count
            step = parent is not None and parent.kind == K.VAR_DECL and STEP_NAME.search(parent.spelling)
            loops = [cursor] if step else []
        if kind == K.BINARY_OPERATOR:
            self.binary(cursor, parent)
        elif kind == K.INTEGER_LITERAL:
            self.literal(cursor, parent)
        elif kind == K.CALL_EXPR:
            self.call(cursor, parent)
        elif kind in (K.BREAK_STMT, K.RETURN_STMT) and loops and self.generation_loop(loops[-1]):
            self.loop_exit(cursor)
        elif kind == K.VAR_DECL:
            self.var_init(cursor)
        realistic.visit(self, cursor, parents)
        inner = [*loops, cursor] if kind in LOOP_KINDS else loops
        for child in cursor.get_children():
            self.walk(child, [*parents, cursor], inner)

    # -- operators

    def operator_token(self, cursor: ci.Cursor) -> tuple[str, int] | None:
        children = _children(cursor)
        if len(children) != 2:
            return None
        lhs_end = _offset(children[0].extent.end)
        for token in cursor.get_tokens():
            if _offset(token.extent.start) >= lhs_end:
                return token.spelling, _offset(token.extent.start)
        return None

    def binary(self, cursor: ci.Cursor, parent: ci.Cursor | None) -> None:
        found = self.operator_token(cursor)
        if found is None:
            return
        op, at = found
        if op in SWAPPED and self.token_at(at, op):
            self.add(at, at + len(op), "comparison", SWAPPED[op], op)
        elif op == "=" and self.statement(parent):
            lhs = _children(cursor)[0]
            if lhs.kind == K.MEMBER_REF_EXPR and "params" in _base_type(lhs):
                self.drop(cursor, "params_field")
            elif _assigned_name(lhs) and POSITION_VAR.search(_assigned_name(lhs) or ""):
                self.plus_minus(_children(cursor)[1], "position")

    def literal(self, cursor: ci.Cursor, parent: ci.Cursor | None) -> None:
        if parent is not None and parent.kind in (K.CASE_STMT, K.ENUM_CONSTANT_DECL, K.TEMPLATE_REF,
                                                  K.INIT_LIST_EXPR):  # fmt: skip
            return
        if parent is not None and parent.kind in (K.VAR_DECL, K.FIELD_DECL) and \
                parent.type.kind in (ci.TypeKind.CONSTANTARRAY, ci.TypeKind.INCOMPLETEARRAY):  # fmt: skip
            return  # an array's size: a buffer one larger or smaller, not a behaviour
        tokens = list(cursor.get_tokens())
        if len(tokens) != 1:
            return
        spelling = tokens[0].spelling
        match = INT_LITERAL.match(spelling)
        start = _offset(tokens[0].extent.start)
        if match is None or not self.token_at(start, spelling):
            return
        digits, suffix = match.groups()
        value = int(digits, 16) if digits.lower().startswith("0x") else int(digits)
        for new in (value + 1, value - 1):
            if new < 0 and "u" in suffix.lower():
                continue
            text = f"{new}{suffix}" if new >= 0 else f"({new}{suffix})"
            self.add(start, start + len(spelling), "constant", text, spelling)

    def call(self, cursor: ci.Cursor, parent: ci.Cursor | None) -> None:
        callee = _callee(cursor)
        name = cursor.spelling
        if callee is None or not name:
            return
        if MEMORY_CALL.match(name) and self.statement(parent):
            self.drop(cursor, "memory_call")
        args = list(cursor.get_arguments())
        params = [p.spelling for p in callee.get_arguments()] if callee is not None else []
        api = API_CALL.match(name) is not None
        if api:
            for arg, param in zip(args, params, strict=False):
                if POSITION_PARAM.match(param or ""):
                    self.plus_minus(arg, "position")
        defined_here = callee.get_definition() is not None and _in_file(callee.get_definition(), self.path)
        if not (api or defined_here):
            return
        for a, b in zip(args, args[1:], strict=False):
            if not (_in_file(a, self.path) and _in_file(b, self.path)):
                continue
            if a.type.get_canonical().spelling != b.type.get_canonical().spelling:
                continue
            ta, tb = _text(self.source, a), _text(self.source, b)
            if not ta or not tb or ta == tb or "{" in ta or "{" in tb or '"' in ta + tb:
                continue  # equal texts swap to the same call; a format string swapped only garbles a message
            start, end = _offset(a.extent.start), _offset(b.extent.end)
            between = self.source[_offset(a.extent.end) : _offset(b.extent.start)].decode(errors="replace")
            if between.strip() != ",":
                continue
            self.add(start, end, "argument_swap", f"{tb}{between}{ta}", f"{ta}{between}{tb}")  # fmt: skip

    def var_init(self, cursor: ci.Cursor) -> None:
        if not POSITION_VAR.search(cursor.spelling):
            return
        init = [c for c in cursor.get_children() if c.kind not in (K.TYPE_REF, K.NAMESPACE_REF, K.TEMPLATE_REF)]
        if len(init) == 1 and "int" in cursor.type.get_canonical().spelling:
            self.plus_minus(init[0], "position")

    def plus_minus(self, expr: ci.Cursor, kind: str) -> None:
        text = _text(self.source, expr)
        if not text or not _in_file(expr, self.path) or "{" in text:
            return
        if re.fullmatch(r"\(?-?\s*[0-9][0-9a-fA-FxXuUlL]*\)?", text.strip()):
            return  # a constant: the constant operator changes it already
        start, end = _offset(expr.extent.start), _offset(expr.extent.end)
        for sign in ("+", "-"):
            self.add(start, end, kind, f"({text}) {sign} 1", text)

    def drop(self, cursor: ci.Cursor, kind: str) -> None:
        text = _text(self.source, cursor)
        start, end = _offset(cursor.extent.start), _offset(cursor.extent.end)
        self.add(start, end, kind, "(void)0", text)

    def loop_exit(self, cursor: ci.Cursor) -> None:
        text = _text(self.source, cursor)
        start, end = _offset(cursor.extent.start), _offset(cursor.extent.end)
        if cursor.kind == K.BREAK_STMT:
            replacement = "(void)0"
        else:
            value = _children(cursor)
            replacement = f"(void)({_text(self.source, value[0])})" if value else "(void)0"
        self.add(start, end, "loop_exit", replacement, text)

    # -- context

    def statement(self, parent: ci.Cursor | None) -> bool:
        """The expression is a whole statement (its value unused), so it can be dropped."""
        return parent is not None and parent.kind in (K.COMPOUND_STMT, K.IF_STMT, K.FOR_STMT, K.WHILE_STMT,
                                                      K.DO_STMT, K.CASE_STMT, K.DEFAULT_STMT)  # fmt: skip

    def generation_loop(self, loop: ci.Cursor) -> bool:
        return any(t.kind == ci.TokenKind.IDENTIFIER and GENERATION_TOKEN.search(t.spelling)
                   for t in loop.get_tokens())  # fmt: skip


def _short(text: str, n: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _line_col(source: bytes, offset: int) -> tuple[int, int]:
    before = source[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def _base_type(member: ci.Cursor) -> str:
    base = next(iter(member.get_children()), None)
    return base.type.get_canonical().spelling if base is not None else ""


def _assigned_name(lhs: ci.Cursor) -> str | None:
    if lhs.kind in (K.DECL_REF_EXPR, K.MEMBER_REF_EXPR):
        return lhs.spelling
    return None


@dataclass
class MutantSet:
    """Every mutant of the shim's files in the reached functions, and what was left out and why."""

    mutants: list[Mutant]
    reached: dict[str, list[str]]  # file -> functions mutated
    not_reached: dict[str, list[str]]  # file -> functions no bound operation reaches (not mutated)
    problems: list[str] = field(default_factory=list)  # what libclang could not parse (the parse goes on)
    operations_of: dict[str, list[str]] = field(default_factory=dict)  # function -> operations reaching it


def make_mutants(files: dict[Path, str], flags: Callable[[Path], list[str]], roots: dict[str, str],
                 kinds: tuple[str, ...] = tuple(KINDS), everything: bool = False) -> MutantSet:  # fmt: skip
    """Mutants of each file (`files`: path → name relative to the consumer), parsed with `flags(path)`, in the
    functions reached from `roots` ({operation: its bound function}; each function records the operations reaching
    it); `everything`: in every function defined there."""
    mutants: list[Mutant] = []
    reached: dict[str, list[str]] = {}
    outside: dict[str, list[str]] = {}
    problems: list[str] = []
    operations_of: dict[str, list[str]] = {}
    for path, rel in files.items():
        source = path.read_bytes()
        tu = index().parse(str(path), args=flags(path))
        errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
        problems += [f"{rel}:{d.location.line}: {d.spelling}" for d in errors[:5]]
        functions = _functions(tu, str(path))
        names = {f.cursor.spelling for f in functions.values()} if everything else set(roots.values())
        inside, outside[rel] = reachable(functions, names)
        reached[rel] = [f.name for f in inside]
        for op, name in roots.items():
            for fn in reachable(functions, {name})[0]:
                ops = operations_of.setdefault(fn.name, [])
                if fn.cursor.spelling == name:  # the function bound to this operation: its own check first
                    ops.insert(0, op)
                else:
                    ops.append(op)
        for fn in inside:
            mutants += [m for m in _Maker(source, rel, str(path), fn).run() if m.kind in kinds]
    unique = {m.id: m for m in mutants}  # a node visited twice (a template instantiation) gives one mutant
    ordered = sorted(unique.values(), key=lambda m: (m.file, m.start, m.kind, m.replacement))
    return MutantSet(ordered, reached, outside, problems, operations_of)


def sample(mutants: list[Mutant], n: int | None, seed: int = 0) -> list[Mutant]:
    """Up to `n` mutants of each stratum drawn at random (seeded, so a rerun draws the same ones), in file order; all
    when n is None. The original seven operators are one stratum, so their sample is the one drawn before the
    realistic families existed (the figure of record stays comparable); each realistic family is a stratum."""
    if n is None:
        return list(mutants)
    strata: dict[str, list[int]] = {}
    for i, mutant in enumerate(mutants):
        strata.setdefault("original" if mutant.kind in ORIGINAL_KINDS else mutant.kind, []).append(i)
    chosen: list[int] = []
    for members in strata.values():
        drawn = range(len(members)) if n >= len(members) else random.Random(seed).sample(range(len(members)), n)
        chosen += [members[j] for j in drawn]
    return [mutants[i] for i in sorted(chosen)]


# --- equivalents marked by the consumer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivalent:
    id: str  # a mutant id or a glob over ids
    reason: str

    def matches(self, mutant: Mutant) -> bool:
        return fnmatch.fnmatchcase(mutant.id, self.id)


def equivalents(entries: list[dict[str, str]]) -> list[Equivalent]:
    return [Equivalent(e["id"], e["reason"]) for e in entries]


# --- nearest check (for survivors) ----------------------------------------------------------------------------------

# What the changed code touches → the check that exercises it most directly (a heuristic, said so in the report).
NEAREST_BY_TEXT: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), c) for p, c in (
    (r"\bfree\(|_free\b|_free\(|delete\b", "frees_release_memory"),
    (r"is_eog|eog", "generate_stops_at_eog"),
    (r"seed", "sampling_seed"),
    (r"temp|top_k|top_p|min_p|penalty|sparams|sampl", "sampling_top_k_disabled"),
    (r"seq_cp|prefix", "shared_prefix_effective"),
    (r"seq_rm|memory_clear|kv_self_clear|_clear\(", "state_across_calls"),
    (r"results\[|prompt_errors|failures|n_failed|texts_|errors_|done_", "parallel_result_order"),
    (r"n_slots|first_seq|seq_id|i_batch|slot", "parallel_uneven_finish"),
    (r"n_threads|n_batch|ctx_params|flash_attn|no_perf|n_seq_max", "context_params"),
    (r"model_params|n_gpu_layers|use_mmap|use_mlock|gguf|magic|file_size|model_path", "model_load_errors"),
    (r"n_past\s*>=?\s*n_ctx|n_ctx", "generate_context_full"),
    (r"tokeniz|detokeniz|n_vocab|piece", "tokenize_detokenize"),
    (r"max_tokens|n_generated", "generate_matches_reference"),
))  # fmt: skip
NEAREST_BY_OPERATION = {
    "generate": "generate_matches_reference", "generate_parallel": "parallel_isolation_shared_prefix",
    "context_create": "context_params", "model_load": "model_load_errors", "tokenize": "tokenize_detokenize",
    "detokenize": "tokenize_detokenize", "backend_init": "backend_init", "model_free": "frees_release_memory",
    "context_free": "frees_release_memory", "free_string_array": "frees_release_memory",
    "free_string": "frees_release_memory", "free_tokens": "frees_release_memory", "token_bos": "context_params",
    "token_eos": "context_params", "n_vocab": "context_params", "n_ctx": "context_params",
}  # fmt: skip


def nearest_check(mutant: Mutant, line_text: str, operations: list[str]) -> str:
    """The check that exercises the changed code most directly: by what the changed line touches, else by the
    operation whose bound function is (or reaches) the function changed; a heuristic."""
    for pattern, name in NEAREST_BY_TEXT:
        if pattern.search(line_text):
            return name
    for op in operations:  # the operation bound to the function itself comes first (see make_mutants)
        if op in NEAREST_BY_OPERATION:
            return NEAREST_BY_OPERATION[op]
    return "generate_matches_reference"


# --- running ------------------------------------------------------------------------------------------------------

# the statuses by their short names (verify/outcomes.py MutantStatus)
KILLED, SURVIVED, NOT_COMPILED, EQUIVALENT, IDENTICAL = (MutantStatus.KILLED, MutantStatus.SURVIVED,
                                                         MutantStatus.NOT_COMPILED, MutantStatus.EQUIVALENT,
                                                         MutantStatus.IDENTICAL)  # fmt: skip


@dataclass
class BuildOutcome:
    """What the caller's build callable returns: the library, or the first compiler errors."""

    library: Path | None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


# build(copy) -> BuildOutcome: the shim of a worker's copy of the consumer (a mutant already written into it)
BuildFn = Callable[[Path], BuildOutcome]


@dataclass
class MutantResult:
    mutant: Mutant
    status: MutantStatus
    check: str | None = None  # the check that killed it
    check_status: CheckStatus | None = None  # that check's status (failed; error or skipped: not verified)
    message: str = ""
    nearest: str | None = None  # survivors: the check nearest to the changed code
    reason: str = ""  # equivalent: the consumer's reason
    seconds: float = 0.0
    checks_run: int = 0

    def __post_init__(self) -> None:  # read back from a previous run's JSON as words
        self.status = MutantStatus(self.status)
        self.check_status = None if self.check_status is None else CheckStatus(self.check_status)

    def to_json(self) -> dict[str, Any]:
        return {"mutant": self.mutant.to_json(), **{k: v for k, v in asdict(self).items() if k != "mutant"}}


@dataclass
class MutationReport:
    consumer: str
    llama: str
    generated: int  # mutants in the reached functions
    results: list[MutantResult]
    reached: dict[str, list[str]]
    not_reached: dict[str, list[str]]
    baseline: list[CheckResult]
    seconds: float
    command: str = ""
    sampled: bool = False
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def count(self, status: MutantStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def compiled(self) -> int:
        return len(self.results) - self.count(NOT_COMPILED)

    @property
    def scored(self) -> int:
        """Compiling, non-equivalent mutants: what the score is over."""
        return self.count(KILLED) + self.count(SURVIVED)

    @property
    def score(self) -> float | None:
        return None if not self.scored else self.count(KILLED) / self.scored

    def kills_by_check(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.status == KILLED and r.check:
                out[r.check] = out.get(r.check, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def by_kind(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = table.setdefault(r.mutant.kind, {s: 0 for s in (KILLED, SURVIVED, NOT_COMPILED, EQUIVALENT,
                                                                   IDENTICAL)})  # fmt: skip
            row[r.status] += 1
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer, "llama": self.llama, "command": self.command, "seconds": round(self.seconds, 1),
            "generated": self.generated, "sampled": self.sampled, "seed": self.seed, "run": len(self.results),
            KILLED: self.count(KILLED), SURVIVED: self.count(SURVIVED), NOT_COMPILED: self.count(NOT_COMPILED),
            "equivalent_marked": self.count(EQUIVALENT), "equivalent_identical": self.count(IDENTICAL),
            "compiled": self.compiled, "scored": self.scored, "score": self.score,
            "kills_by_check": self.kills_by_check(), "by_kind": self.by_kind(),
            "reached": self.reached, "not_reached": self.not_reached, "notes": self.notes,
            "baseline": [r.to_json() for r in self.baseline], "results": [r.to_json() for r in self.results],
        }  # fmt: skip


def markdown(report: MutationReport, level: int = 2) -> str:
    h = "#" * level
    score = "n/a" if report.score is None else f"{100 * report.score:.1f} %"
    lines = [f"{h} Mutation score", "",
             f"**{score}** of the compiling, non-equivalent mutants killed ({report.count(KILLED)} of "
             f"{report.scored}) — `{report.consumer}` at llama.cpp {report.llama}, {report.seconds:.0f} s.", ""]
    if report.command:
        lines += [f"Command: `{report.command}`", ""]
    sampled = f" (a seeded sample, seed {report.seed}, of {report.generated})" if report.sampled else ""
    lines += ["| mutants | count |", "| --- | ---: |",
              f"| made in the reached functions | {report.generated} |",
              f"| run{sampled} | {len(report.results)} |",
              f"| did not compile (counted apart) | {report.count(NOT_COMPILED)} |",
              f"| equivalent: library byte-identical | {report.count(IDENTICAL)} |",
              f"| equivalent: marked in the config | {report.count(EQUIVALENT)} |",
              f"| killed | {report.count(KILLED)} |", f"| survived | {report.count(SURVIVED)} |", ""]  # fmt: skip
    unverified = [r for r in report.results if r.status == KILLED and r.check_status != CheckStatus.FAILED]
    hangs = [r for r in report.results if r.status == KILLED and r.message.startswith("hang")]
    lines += [f"Killed means a check that passes on the unmutated build did not pass: failed ({len(hangs)} of them "
              f"by a hang past --timeout), or — {len(unverified)} here — could not be verified (harness error or "
              "skip, which `gate` reports as exit 15).", ""]
    lines += [f"{h}# By operator family", "", "| operator | score | killed | survived | not compiled | equivalent |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, row in sorted(report.by_kind().items(), key=lambda kv: (kv[0] not in ORIGINAL_KINDS, kv[0])):
        scored = row[KILLED] + row[SURVIVED]
        score = f"{100 * row[KILLED] / scored:.1f} %" if scored else "n/a"
        family = "" if kind in ORIGINAL_KINDS else " — realistic"
        lines.append(f"| {kind} ({KINDS[kind]}{family}) | {score} | {row[KILLED]} | {row[SURVIVED]} | "
                     f"{row[NOT_COMPILED]} | {row[EQUIVALENT] + row[IDENTICAL]} |")  # fmt: skip
    lines += ["", f"{h}# Kills by check", "", "| check | mutants killed |", "| --- | ---: |"]
    lines += [f"| `{name}` | {n} |" for name, n in report.kills_by_check().items()]
    survivors = [r for r in report.results if r.status == SURVIVED]
    lines += ["", f"{h}# Survivors", ""]
    if not survivors:
        lines.append("None.")
    else:
        lines += ["Nearest check: the one exercising the changed code most directly (a heuristic).", "",
                  "| where | function | mutation | nearest check |", "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {r.mutant.location()} | `{r.mutant.function}` | {r.mutant.kind}: {_md(r.mutant.description)} | "
                  f"`{r.nearest}` |" for r in survivors]  # fmt: skip
    marked = [r for r in report.results if r.status == EQUIVALENT]
    if marked:
        lines += ["", f"{h}# Marked equivalent (consumer config `mutants`)", "", "| where | mutation | reason |",
                  "| --- | --- | --- |"]  # fmt: skip
        lines += [f"| {r.mutant.location()} | {_md(r.mutant.description)} | {_md(r.reason)} |" for r in marked]
    outside = {f: names for f, names in report.not_reached.items() if names}
    if outside:
        lines += ["", "Not mutated (no bound operation reaches them, so no check can): "
                  + "; ".join(f"{f}: {', '.join(f'`{n}`' for n in names)}" for f, names in outside.items())]
    for note in report.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _Stop(Exception):  # noqa: N818 - control flow: the first kill ends a mutant's checklist
    def __init__(self, result: CheckResult) -> None:
        self.result = result


@dataclass
class Plan:
    """One mutation run: the consumer, what to build and check with, the mutants."""

    root: Path  # the consumer tree (copied per worker)
    target: Target  # the unmutated build's target: header, model, [verify] config (library set per build)
    options: Options
    checks: list[str]
    mutants: list[Mutant]
    marked: list[Equivalent]
    operations_of: dict[str, list[str]]  # function name -> operations whose bound function reaches it
    workdir: Path  # the per-job copies go here (the caller removes it)
    jobs: int = 1
    progress: Callable[[MutantResult, int, int], None] | None = None
    env: dict[str, str] | None = None  # for every check's child process (MALLOC_CHECK_ ...: see malloc_check_env)


def _copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("build*", "reports", ".git"))
    return dest


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Worker:
    """One copy of the consumer: mutants are written into it one at a time and rebuilt in place (the shim's build
    folder is keyed by the sources' paths, so each worker recompiles only the changed file)."""

    def __init__(self, plan: Plan, number: int, build: BuildFn, base: Path) -> None:
        self.plan = plan
        self.build = build
        self.copy = _copy_tree(plan.root, base / f"w{number}" / plan.root.name)
        self.originals: dict[str, bytes] = {}
        self.baseline_digest: str | None = None

    def prepare(self) -> BuildOutcome:
        outcome = self.build(self.copy)
        if outcome.library is not None:
            self.baseline_digest = _digest(outcome.library)
        return outcome

    def run(self, mutant: Mutant, order: Callable[[], list[str]], record_kill: Callable[[str], None]) -> MutantResult:
        started = time.monotonic()
        path = self.copy / mutant.file
        original = self.originals.setdefault(mutant.file, path.read_bytes())
        path.write_bytes(mutant.apply(original))
        try:
            outcome = self.build(self.copy)
        finally:
            path.write_bytes(original)
        if outcome.library is None:
            return MutantResult(mutant, NOT_COMPILED, message="; ".join(outcome.errors[:2]),
                                seconds=time.monotonic() - started)  # fmt: skip
        if _digest(outcome.library) == self.baseline_digest:
            result = MutantResult(mutant, IDENTICAL, message="the library is byte-identical to the unmutated one")
            result.seconds = time.monotonic() - started
            return result
        target = Target(outcome.library, self.copy / self.plan.target.header.relative_to(self.plan.root)
                        if self.plan.target.header.is_relative_to(self.plan.root) else self.plan.target.header,
                        self.plan.target.model, "mutant", self.plan.target.llama_tree, self.plan.target.verify,
                        self.copy)  # fmt: skip
        seen: list[CheckResult] = []

        def progress(name: str, result: CheckResult) -> None:
            seen.append(result)
            if result.status != PASSED:
                raise _Stop(result)

        try:
            run_checks(target, self.plan.options, order(), progress, env=self.plan.env)
        except _Stop as stop:
            record_kill(stop.result.name)
            return MutantResult(mutant, KILLED, stop.result.name, stop.result.status, stop.result.message[:300],
                                seconds=time.monotonic() - started, checks_run=len(seen))  # fmt: skip
        return MutantResult(mutant, SURVIVED, seconds=time.monotonic() - started, checks_run=len(seen))


def run_mutants(plan: Plan, build: BuildFn, line_of: Callable[[Mutant], str]) -> list[MutantResult]:
    """Every mutant of the plan through build + checklist (the results in the mutants' order). The checks are tried
    in the order that has killed most so far: a kill needs one failing check, a survivor runs them all."""
    base = plan.workdir
    base.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    kills: dict[str, int] = {}
    results: dict[int, MutantResult] = {}
    done = [0]

    def order() -> list[str]:
        with lock:
            rank = dict(kills)
        return sorted(plan.checks, key=lambda n: (-rank.get(n, 0), plan.checks.index(n)))

    def record_kill(name: str) -> None:
        with lock:
            kills[name] = kills.get(name, 0) + 1

    pending: list[tuple[int, Mutant]] = []
    for i, mutant in enumerate(plan.mutants):
        mark = next((e for e in plan.marked if e.matches(mutant)), None)
        if mark is not None:
            results[i] = MutantResult(mutant, EQUIVALENT, reason=mark.reason)
        else:
            pending.append((i, mutant))
    workers = [_Worker(plan, n, build, base) for n in range(max(1, min(plan.jobs, len(pending) or 1)))]
    for worker in workers:
        outcome = worker.prepare()
        if outcome.library is None:
            raise MutateError("the unmutated copy does not build: " + "; ".join(outcome.errors[:3]))
    queue = iter(pending)
    stop = threading.Event()  # set when the run is interrupted: workers finish their mutant and take no other

    def work(worker: _Worker) -> None:
        while not stop.is_set():
            with lock:
                item = next(queue, None)
            if item is None:
                return
            i, mutant = item
            result = worker.run(mutant, order, record_kill)
            if result.status == SURVIVED:
                result.nearest = nearest_check(mutant, line_of(mutant), plan.operations_of.get(mutant.function, []))
            with lock:
                results[i] = result
                done[0] += 1
                count = done[0]
            if plan.progress is not None:
                plan.progress(result, count, len(pending))

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        try:
            list(pool.map(work, workers))
        except BaseException:
            stop.set()
            raise
    return [results[i] for i in range(len(plan.mutants))]


MALLOC_DEBUG_LIBS = ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0", "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                     "/lib64/libc_malloc_debug.so.0", "/usr/lib64/libc_malloc_debug.so.0",
                     "/lib/aarch64-linux-gnu/libc_malloc_debug.so.0")  # fmt: skip


def malloc_check_env() -> dict[str, str] | None:
    """glibc's heap checks for the check children: a write past an allocation or a double free aborts (the check
    fails: killed) instead of passing unnoticed, and fresh or freed memory is filled with a pattern, so a read of
    it shows. None where glibc's malloc debug library is not installed."""
    lib = next((p for p in MALLOC_DEBUG_LIBS if Path(p).is_file()), None)
    if lib is None:
        return None
    return {"LD_PRELOAD": lib, "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}


def _mutant_from_json(data: dict[str, Any]) -> Mutant:
    return Mutant(**{k: data[k] for k in ("file", "function", "line", "column", "kind", "description", "start", "end",
                                          "replacement")})  # fmt: skip


def rescore(data: dict[str, Any], marked: list[Equivalent]) -> tuple[MutationReport, list[str]]:
    """A previous run's JSON with the consumer's current equivalence marks applied, nothing rebuilt: a survivor a
    mark matches becomes equivalent (with its reason). A killed mutant a mark matches stays killed, and the mark is
    reported as wrong."""
    results, wrong = [], []
    for item in data["results"]:
        mutant = _mutant_from_json(item["mutant"])
        fields = {k: item.get(k) for k in ("status", "check", "check_status", "message", "nearest", "reason", "seconds",
                                           "checks_run")}  # fmt: skip
        result = MutantResult(mutant, **{k: v for k, v in fields.items() if v is not None})
        mark = next((e for e in marked if e.matches(mutant)), None)
        if mark is not None and result.status == SURVIVED:
            result = MutantResult(mutant, EQUIVALENT, reason=mark.reason, seconds=result.seconds,
                                  checks_run=result.checks_run)  # fmt: skip
        elif mark is not None and result.status == KILLED:
            wrong.append(f"{mutant.id}: marked equivalent ({mark.reason}) but killed by {result.check}")
        results.append(result)
    report = MutationReport(data["consumer"], data["llama"], data["generated"], results, data["reached"],
                            data["not_reached"], [CheckResult.from_json(r) for r in data["baseline"]],
                            data["seconds"], data.get("command", ""), data.get("sampled", False), data.get("seed", 0),
                            list(data.get("notes", [])))  # fmt: skip
    return report, wrong


def write_json(report: MutationReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, default=str))


def iter_lines(source: bytes) -> Iterator[str]:
    yield from source.decode(errors="replace").splitlines()
