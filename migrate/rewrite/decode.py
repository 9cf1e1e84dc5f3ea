"""llama_decode error handling by return code (llama.h: 0 ok, 1 no KV slot, 2 aborted, -1 invalid batch, < -1 fatal),
rendered from templates/decode_error.cpp.j2.

Two shapes are rewritten:
  A  `if (llama_decode(ctx, batch) != 0) { ... }` (or `if (llama_decode(...))`): the return code is kept in a
     new variable declared before the `if` (or in the `if`'s init-statement where no block holds the `if`);
  B  `int ret = llama_decode(ctx, batch);` (or `ret = llama_decode(...);`) followed by `if (ret != 0)` /
     `if (ret)` / `if (ret < 0)`, possibly after or around retry logic on `ret > 0`.
In both the only other changes are where the site records its error: a switch on the return code goes right
before that statement and the message gains the detail, the original message staying as its prefix. Every
other statement (cleanup, return, retry branches, comments) is kept byte for byte. A site that records no
error (or only a flag) is left as it is and said so in an advisory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import clang.cindex as ci
import jinja2

from migrate.paths import data_dir
from migrate.rewrite.collect import DecodeSite
from migrate.rewrite.cursors import (
    K,
    children,
    if_parts,
    meaningful_parent,
    operator_between,
    same_cursor,
    span_of,
    unary_operator,
    unwrap,
    walk,
)
from migrate.rewrite.edits import Edit, SourceFile, render_range
from migrate.rewrite.memory import choose_name, names_in
from migrate.rewrite.tokens import tokenize

TEMPLATE = "decode_error.cpp.j2"
ERROR_CONDITIONS = {"!=0", "truthy", "<0"}
RETRY_OPERATORS = {">", ">=", "=="}
# The return codes the switch tells apart, each class by one value: its cases 1, 2 and -1, and its default (< -1
# fatal, > 2 unknown). A comparison with -1, 0, 1 or 2 is constant on each class, so a condition on the return code
# made of those is evaluated exactly per class: the switch gets only the cases that can reach the error record.
CASE_CODES = (1, 2, -1)
FATAL, UNKNOWN = -2, 3
CODE_CLASSES = (*CASE_CODES, FATAL, UNKNOWN)
EXACT_LITERALS = {-1, 0, 1, 2}
COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
# Calls that look like reporting an error, named in the advisory when none is the configured error_function.
UNREADABLE = ("this {call} check tests the return code in a form this rule cannot read; check it handles 1 (no "
              "KV slot), 2 (aborted), -1 and < -1")
ERROR_LIKE = re.compile(r"(?i)err|fail|throw|abort|warn|log|report|print")


@functools.cache
def _template_module() -> Any:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        autoescape=False,
        keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(TEMPLATE).module


@dataclass
class DecodeResult:
    edits: list[Edit] = field(default_factory=list)
    advisory: str | None = None  # set when the site is left alone (or needs a look) — the why
    note: str = ""
    names: set[str] = field(default_factory=set)  # names this rewrite declares (kept unique per function)


@dataclass
class Record:
    """Where an error check records its error: a call to the error function, or a message variable."""

    kind: str  # "call", "variable" or "flag"
    node: ci.Cursor  # the call or the assignment
    ancestors: tuple[ci.Cursor, ...]
    message: ci.Cursor | None  # the message expression
    target_type: str  # canonical type the message goes into
    codes: frozenset[int] | None = None  # return-code classes that reach it (CODE_CLASSES); None: cannot tell


class DecodeRewriter:
    def __init__(self, source: SourceFile, options: Mapping[str, Any], language: str, file_scope: set[str],
                 introduced: set[str] | None = None) -> None:  # fmt: skip
        self.introduced = introduced if introduced is not None else set()
        self.source = source
        self.data = source.data
        self.error_function = str(options.get("error_function", "set_error"))
        self.error_functions = {name.strip() for name in self.error_function.split(",") if name.strip()}
        self.message_arg = int(options.get("error_message_arg", -1))
        self.language = language
        self.file_scope = file_scope
        self.templates = _template_module()
        self.call = ""  # set per site by rewrite(): the decode call its rule names

    # --- entry -----------------------------------------------------------------------------------------------

    def rewrite(self, site: DecodeSite, function: ci.Cursor | None) -> DecodeResult:
        self.call = site.rule.match.function or ""  # the decode call the rule names (its messages say which)
        call_span = span_of(site.call)
        if self.data[call_span.start : call_span.start + len(self.call)] != self.call.encode():
            return DecodeResult(advisory=f"{self.call} is called inside a macro; its error handling is not rewritten")
        if function is None:
            return DecodeResult(advisory=f"{self.call} outside a function; not rewritten")
        top, top_index = self._climb(site.call, site.ancestors)
        parent = site.ancestors[top_index] if top_index >= 0 else None
        if parent is None:
            return DecodeResult()
        if parent.kind == K.COMPOUND_STMT:
            return DecodeResult(advisory=f"the return code of {self.call} is ignored: 1 (no KV slot), 2 (aborted) "
                                "and negative codes (invalid batch, fatal) all go unnoticed")  # fmt: skip
        if parent.kind == K.VAR_DECL:
            return self._stored(site, function, parent, site.ancestors[: top_index + 1])
        if parent.kind == K.BINARY_OPERATOR:
            kids = children(parent)
            operator = operator_between(self.data, kids[0], kids[1]) if len(kids) == 2 else None
            if operator == "=" and unwrap(kids[0]).kind == K.DECL_REF_EXPR:
                return self._stored(site, function, unwrap(kids[0]).referenced, site.ancestors[: top_index + 1])
        return self._checked_inline(site, function, top, top_index)

    def _climb(self, node: ci.Cursor, ancestors: tuple[ci.Cursor, ...]) -> tuple[ci.Cursor, int]:
        """Look up through wrappers: (the outermost wrapper of node, index of its real parent in ancestors)."""
        parent, index = meaningful_parent(ancestors)
        top = ancestors[index + 1] if 0 <= index < len(ancestors) - 1 else node
        return top, index

    # --- shape A: the call is the condition ----------------------------------------------------------------

    def _checked_inline(self, site: DecodeSite, function: ci.Cursor, top: ci.Cursor, index: int) -> DecodeResult:
        ancestors = site.ancestors
        parent = ancestors[index]
        condition: ci.Cursor = top
        if parent.kind == K.BINARY_OPERATOR:
            kind = self._condition_kind(parent, site.call)
            if kind == "<0":
                return DecodeResult(advisory=f"{self.call} is checked with `< 0` only: 1 (no KV slot) and 2 (aborted) "
                                    "pass as success")  # fmt: skip
            if kind != "!=0":
                return DecodeResult(advisory=f"{self.call}'s return code is checked in a form this rule does not "
                                    "rewrite; check it handles 1 (no KV slot), 2 (aborted), -1 and < -1")  # fmt: skip
            condition = parent
            parent, index = meaningful_parent(ancestors[:index])
        if parent is None or parent.kind != K.IF_STMT or not self._is_condition(parent, condition):
            return DecodeResult(advisory=f"{self.call}'s return code is used in a form this rule does not rewrite; "
                                "check it handles 1 (no KV slot), 2 (aborted), -1 and < -1")  # fmt: skip
        if_stmt = parent
        body = self._then_branch(if_stmt, condition)
        if body is None:
            return DecodeResult()
        record = self._find_record(body, ancestors[: index + 1] + (if_stmt,), frozenset(CODE_CLASSES), None, None)
        if isinstance(record, str):
            return DecodeResult(advisory=record)
        if record is None or record.kind == "flag":
            return DecodeResult(advisory=self._nothing_recorded(record, body, retry=False))
        taken = names_in(function, self.data) | self.file_scope | self.introduced
        ret_name = choose_name("decode_ret", taken)
        detail = self._record_edits(record, ret_name, taken | {ret_name}, site.rule.id)
        if detail.advisory:
            return detail
        detail.names.add(ret_name)
        call_text = self.source.text(span_of(site.call).start, span_of(site.call).end)
        declaration = str(self.templates.declare(ret_name, call_text))
        condition_span = span_of(condition)
        if_parent, _ = meaningful_parent(ancestors[:index])
        in_block = if_parent is not None and if_parent.kind == K.COMPOUND_STMT
        if in_block:
            if_start = span_of(if_stmt).start
            indent = self.source.indent_at(if_start) if self.source.starts_line(if_start) else ""
            head = self.source.make_edit(if_start, if_start, declaration + self.source.newline + indent,
                                         site.rule.id, note="return code kept")  # fmt: skip
            new_condition = f"{ret_name} != 0"
            edits = [head]
        elif self.language == "c++":
            new_condition = f"{declaration} {ret_name} != 0"
            edits = []
        else:
            return DecodeResult(advisory=f"the {self.call} check is not inside a block (e.g. `else if`), so C code "
                                "has no place to keep the return code; not rewritten")  # fmt: skip
        edits.append(self.source.make_edit(condition_span.start, condition_span.end, new_condition, site.rule.id))
        return DecodeResult(edits + detail.edits, note=detail.note, names=detail.names)

    def _is_condition(self, if_stmt: ci.Cursor, condition: ci.Cursor) -> bool:
        parts = if_parts(self.data, if_stmt)
        return parts is not None and span_of(parts.condition) == span_of(condition)

    def _then_branch(self, if_stmt: ci.Cursor, condition: ci.Cursor) -> ci.Cursor | None:
        parts = if_parts(self.data, if_stmt)
        return parts.then if parts is not None else None

    def _condition_kind(self, node: ci.Cursor, subject: ci.Cursor | None, var: ci.Cursor | None = None) -> str:
        """How a condition tests the return code: "!=0", "<0", "truthy", "retry" (> 0, == 1, ...) or "other"."""
        node = unwrap(node)
        if self._is_subject(node, subject, var):
            return "truthy"
        if node.kind != K.BINARY_OPERATOR:
            return "other"
        kids = children(node)
        if len(kids) != 2:
            return "other"
        operator = operator_between(self.data, kids[0], kids[1])
        left, right = kids
        if operator in ("&&", "||"):
            kinds = {self._condition_kind(left, subject, var), self._condition_kind(right, subject, var)}
            return "retry" if "retry" in kinds else "other"
        if self._is_subject(right, subject, var):
            left, right = right, left
            operator = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(operator or "", operator)
        if not self._is_subject(left, subject, var):
            return "other"
        value = self._literal(right)
        if value is None:
            return "other"
        if operator == "!=" and value == 0:
            return "!=0"
        if operator == "<" and value == 0:
            return "<0"
        if (operator in (">", ">=") and value >= 0) or (operator == "==" and value in (1, 2)):
            return "retry"
        return "other"

    def _is_subject(self, node: ci.Cursor, subject: ci.Cursor | None, var: ci.Cursor | None) -> bool:
        node = unwrap(node)
        if subject is not None and same_cursor(node, subject):
            return True
        if var is not None and node.kind == K.DECL_REF_EXPR and node.referenced is not None:
            return node.referenced.location.offset == var.location.offset and node.spelling == var.spelling
        return False

    def _literal(self, node: ci.Cursor) -> int | None:
        node = unwrap(node)
        span = span_of(node)
        text = self.data[span.start : span.end].replace(b" ", b"")
        try:
            return int(text.decode(), 0)
        except ValueError:
            return None

    # --- shape B: the return code is stored, then tested ----------------------------------------------------

    def _stored(self, site: DecodeSite, function: ci.Cursor, var: ci.Cursor | None,
                ancestors: tuple[ci.Cursor, ...]) -> DecodeResult:  # fmt: skip
        if var is None:
            return DecodeResult()
        block_index = max((i for i, node in enumerate(ancestors) if node.kind == K.COMPOUND_STMT), default=-1)
        if block_index < 0 or block_index + 1 >= len(ancestors):
            return DecodeResult()
        block, statement = ancestors[block_index], ancestors[block_index + 1]
        siblings = children(block)
        position = next((i for i, kid in enumerate(siblings) if same_cursor(kid, statement)), None)
        if position is None:
            return DecodeResult()
        retry = False
        gone: set[int] = set()  # codes an earlier `if (ret > 0) continue;` (return, break ...) has taken away
        for sibling in siblings[position + 1 :]:
            if self._assigns(sibling, var):
                break
            branch, chain, retry_seen = self._error_branch(sibling, var)
            retry = retry or retry_seen
            if branch is None:
                gone |= self._codes_that_leave(sibling, var)
                continue
            retry = retry or self._has_retry(branch, var)
            if self._already_switched(branch, var):
                return DecodeResult()
            if self._reports_code(branch, var):
                return DecodeResult(advisory=f"this {self.call} check already reports the return code "
                                    f"(`{var.spelling}` is passed into its message); left unchanged")  # fmt: skip
            codes = self._branch_codes(chain, var)
            if codes is None:
                return DecodeResult(advisory=UNREADABLE.format(call=self.call))
            record = self._find_record(branch, chain, codes - gone, None, var)
            if isinstance(record, str):
                return DecodeResult(advisory=record)
            if record is None or record.kind == "flag":
                return DecodeResult(advisory=self._nothing_recorded(record, branch, retry))
            retry = retry and not self._classifies(record, len(chain))
            taken = names_in(function, self.data) | self.file_scope | self.introduced
            result = self._record_edits(record, var.spelling, taken, site.rule.id)
            if retry and not result.advisory:
                result.note = "retry logic on the return code kept as written; " + result.note
            return result
        return DecodeResult()

    def _assigns(self, statement: ci.Cursor, var: ci.Cursor) -> bool:
        for node, _ in walk(statement):
            if node.kind == K.BINARY_OPERATOR:
                kids = children(node)
                if (len(kids) == 2 and self._is_subject(kids[0], None, var)
                        and operator_between(self.data, kids[0], kids[1]) == "="):  # fmt: skip
                    return True
        return False

    def _error_branch(self, statement: ci.Cursor,
                      var: ci.Cursor) -> tuple[ci.Cursor | None, tuple[ci.Cursor, ...], bool]:  # fmt: skip
        """In an if / else-if chain testing var: the branch taken on error (or None), its ancestors, and whether a
        retry condition (`var > 0`, `var == 1`) came first."""
        retry = False
        node = statement
        chain: tuple[ci.Cursor, ...] = ()
        while node is not None and node.kind == K.IF_STMT:
            parts = if_parts(self.data, node)
            if parts is None:
                return None, chain, retry
            kind = self._condition_kind(parts.condition, None, var)
            chain = (*chain, node)
            if kind in ERROR_CONDITIONS:
                return parts.then, chain, retry
            if kind == "retry":
                retry = True
            node = parts.otherwise
        return None, chain, retry

    def _has_retry(self, branch: ci.Cursor, var: ci.Cursor) -> bool:
        for node, _ in walk(branch):
            parts = if_parts(self.data, node) if node.kind == K.IF_STMT else None
            if parts is not None and self._condition_kind(parts.condition, None, var) == "retry":
                return True
        return False

    def _reports_code(self, branch: ci.Cursor, var: ci.Cursor) -> bool:
        """The branch hands the return code to a function (e.g. a describe(ret) helper, std::to_string(ret))."""
        for node, above in walk(branch):
            if node.kind == K.DECL_REF_EXPR and self._is_subject(node, None, var):
                parent, _ = meaningful_parent(above)
                if parent is not None and parent.kind == K.CALL_EXPR:
                    return True
        return False

    def _already_switched(self, branch: ci.Cursor, var: ci.Cursor) -> bool:
        for node, _ in walk(branch):
            if node.kind == K.SWITCH_STMT:
                kids = children(node)
                if kids and self._is_subject(kids[0], None, var):
                    return True
        return False

    # --- the error record -----------------------------------------------------------------------------------

    def _find_record(self, body: ci.Cursor, chain: tuple[ci.Cursor, ...], codes: frozenset[int],
                     subject: ci.Cursor | None, var: ci.Cursor | None) -> Record | str | None:  # fmt: skip
        """Where the branch records its error, chosen among the calls to the error function (else the message
        variables, else a flag) as the first that two or more return-code classes can reach: a record inside
        `if (r == 1)` already knows its code and gets no switch. A string: the advisory why nothing is rewritten."""
        calls: list[Record] = []
        assignments: list[Record] = []
        for node, above in walk(body, chain):
            if any(a.kind == K.LAMBDA_EXPR for a in above[len(chain) :]):
                continue
            if node.kind == K.CALL_EXPR and node.spelling in self.error_functions:
                record = self._call_record(node, above)
                if record is not None:
                    calls.append(record)
            elif node.kind == K.BINARY_OPERATOR or (node.kind == K.CALL_EXPR and node.spelling == "operator="):
                record = self._assignment_record(node, above)
                if record is not None:
                    assignments.append(record)
        messages = [r for r in assignments if r.kind == "variable"]
        flags = [r for r in assignments if r.kind == "flag"]
        candidates = calls or messages
        if not candidates:
            return flags[0] if flags else None
        for record in candidates:
            record.codes = self._record_codes(record, len(chain), codes, subject, var)
            if record.codes is None:
                return (f"this {self.call} check records its error under a condition on the return code this rule "
                        "cannot read; left unchanged — check it handles 1 (no KV slot), 2 (aborted), -1 and < -1")
            if len(record.codes) >= 2:
                return record
        told = ", ".join(f"line {self.source.line_of(span_of(r.node).start)}: {_codes_text(r.codes or frozenset())}"
                         for r in candidates)  # fmt: skip
        return (f"this {self.call} check already tells the return codes apart ({told}); each error record "
                "knows its code, so no switch is added — left unchanged")

    def _branch_codes(self, chain: tuple[ci.Cursor, ...], var: ci.Cursor) -> frozenset[int] | None:
        """Return-code classes that take the error branch of an if / else-if chain (the last if's then-branch)."""
        codes = set(CODE_CLASSES)
        for position, if_stmt in enumerate(chain):
            parts = if_parts(self.data, if_stmt)
            if parts is None:
                return None
            want = position == len(chain) - 1
            for code in list(codes):
                truth = self._truth(parts.condition, code, None, var)
                if truth is None:
                    return None
                if want not in truth:
                    codes.discard(code)
        return frozenset(codes)

    def _codes_that_leave(self, statement: ci.Cursor, var: ci.Cursor) -> set[int]:
        """Codes for which `if (cond on ret) { ...; continue; }` (no else, its branch ending in return, continue,
        break or goto) certainly leaves before the statements after it."""
        parts = if_parts(self.data, statement) if statement.kind == K.IF_STMT else None
        if parts is None or parts.otherwise is not None or not _leaves(parts.then):
            return set()
        return {code for code in CODE_CLASSES if self._truth(parts.condition, code, None, var) == {True}}

    def _record_codes(self, record: Record, start: int, codes: frozenset[int], subject: ci.Cursor | None,
                      var: ci.Cursor | None) -> frozenset[int] | None:  # fmt: skip
        """The classes of `codes` that can reach the record, through the ifs, loops and `?:` between the error
        branch (path[start]) and it; None when a condition there tests the return code in a form not understood."""
        path = (*record.ancestors, record.node)
        reaching = set(codes)
        for parent, child in zip(path[start:], path[start + 1 :], strict=False):
            condition, want = self._guard(parent, child)
            if condition is None:
                continue
            for code in list(reaching):
                truth = self._truth(condition, code, subject, var)
                if truth is None:
                    return None
                if want not in truth:
                    reaching.discard(code)
        return frozenset(reaching)

    def _classifies(self, record: Record, start: int) -> bool:
        """A condition between the error branch and the record tests the code: that is classification, not retry."""
        path = (*record.ancestors, record.node)
        return any(self._guard(parent, child)[0] is not None
                   for parent, child in zip(path[start:], path[start + 1 :], strict=False))  # fmt: skip

    def _guard(self, parent: ci.Cursor, child: ci.Cursor) -> tuple[ci.Cursor | None, bool]:
        """The condition `child` runs under inside `parent` and the value it needs, or (None, True)."""
        if parent.kind == K.IF_STMT:
            parts = if_parts(self.data, parent)
            if parts is not None and same_cursor(child, parts.then):
                return parts.condition, True
            if parts is not None and parts.otherwise is not None and same_cursor(child, parts.otherwise):
                return parts.condition, False
        elif parent.kind == K.WHILE_STMT:
            kids = children(parent)
            if len(kids) == 2 and same_cursor(child, kids[1]):
                return kids[0], True
        elif parent.kind == K.CONDITIONAL_OPERATOR:
            kids = children(parent)
            if len(kids) == 3 and same_cursor(child, kids[1]):
                return kids[0], True
            if len(kids) == 3 and same_cursor(child, kids[2]):
                return kids[0], False
        return None, True

    def _truth(self, node: ci.Cursor, code: int, subject: ci.Cursor | None, var: ci.Cursor | None) -> set[bool] | None:
        """The values `node` can take when the return code is `code` (a CODE_CLASSES value); a part that does not
        test the code can be either; None: it tests the code in a form this cannot evaluate exactly."""
        node = unwrap(node)
        if self._is_subject(node, subject, var):
            return {code != 0}
        if not any(self._is_subject(n, subject, var) for n, _ in walk(node)):
            return {True, False}
        kids = children(node)
        if node.kind == K.UNARY_OPERATOR and unary_operator(self.data, node) == "!" and len(kids) == 1:
            inner = self._truth(kids[0], code, subject, var)
            return None if inner is None else {not value for value in inner}
        if node.kind != K.BINARY_OPERATOR or len(kids) != 2:
            return None
        operator = operator_between(self.data, kids[0], kids[1])
        left, right = kids
        if operator in ("&&", "||"):
            a, b = self._truth(left, code, subject, var), self._truth(right, code, subject, var)
            if a is None or b is None:
                return None
            return {(x and y) if operator == "&&" else (x or y) for x in a for y in b}
        if self._is_subject(right, subject, var):
            left, right = right, left
            operator = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(operator or "", operator)
        value = self._literal(right)
        if not self._is_subject(left, subject, var) or operator not in COMPARE or value not in EXACT_LITERALS:
            return None
        return {COMPARE[operator](code, value)}

    def _call_record(self, call: ci.Cursor, above: tuple[ci.Cursor, ...]) -> Record | None:
        args = list(call.get_arguments())
        if not args:
            return None
        message = args[self.message_arg] if -len(args) <= self.message_arg < len(args) else None
        decl = call.referenced
        params = list(decl.get_arguments()) if decl is not None else []
        index = self.message_arg % len(args)
        target = params[index].type.get_canonical().spelling if index < len(params) else ""
        return Record("call", call, above, message, target)

    def _assignment_record(self, node: ci.Cursor, above: tuple[ci.Cursor, ...]) -> Record | None:
        kids = children(node)
        if node.kind == K.CALL_EXPR:  # `text = "..."` on a class type (std::string) is a call of operator=
            kids = [kids[0], kids[-1]] if len(kids) == 3 else []
        elif len(kids) == 2 and operator_between(self.data, kids[0], kids[1]) != "=":
            kids = []
        if len(kids) != 2:
            return None
        target = kids[0].type.get_canonical()
        spelling = target.spelling
        if _is_string_type(spelling) or _is_char_pointer(target):
            return Record("variable", node, above, kids[1], spelling)
        if target.kind in (ci.TypeKind.BOOL, ci.TypeKind.INT):
            return Record("flag", node, above, None, spelling)
        return None

    def _nothing_recorded(self, record: Record | None, branch: ci.Cursor, retry: bool) -> str:
        prefix = "retry logic on the return code kept; " if retry else ""
        if record is not None and record.kind == "flag":
            return (prefix + f"this {self.call} check records only a flag, which has no room for the reason by "
                    "return code; left unchanged")  # fmt: skip
        seen = self._error_like_calls(branch)
        if not seen:
            return (prefix + f"this {self.call} check records no error (no call to `{self.error_function}`, no "
                    "message variable); left unchanged — set option error_function if the error goes through another "
                    "function")  # fmt: skip
        calls = ", ".join(f"`{name}(...)`" for name in seen[:4])
        name = next((n for n in seen if "error" in n.lower()), seen[0])
        return (prefix + f"this {self.call} check records no error through `{self.error_function}` (the error "
                f"function option) — it calls {calls}; left unchanged: if `{name}` records the error, set option "
                f"error_function={name} (--option error_function={name}, or options = {{ error_function = "
                f'"{name}" }} in llama-migrate.toml)')  # fmt: skip

    def _error_like_calls(self, branch: ci.Cursor) -> list[str]:
        """Names of the calls in the branch that look like reporting an error (SetError, Rf_error, fprintf ...)."""
        names: list[str] = []
        for node, _ in walk(branch):
            name = node.spelling if node.kind == K.CALL_EXPR else ""
            if name and ERROR_LIKE.search(name) and name not in names and not name.startswith("operator"):
                names.append(name)
        return names

    def _record_edits(self, record: Record, ret: str, taken: set[str], rule_id: str) -> DecodeResult:
        message = record.message
        if message is None:
            return DecodeResult(advisory="the error record has no message argument; left unchanged")
        span = span_of(message)
        original = self.source.text(span.start, span.end)
        statement, statement_parent = self._statement_of(record)
        unit = self._indent_unit(statement)
        is_literal = _is_string_literal(self.data, span.start, span.end)
        cases, default = _switch_cases(record.codes if record.codes is not None else frozenset(CODE_CLASSES))
        if _is_string_type(record.target_type):
            name = choose_name("decode_detail", taken)
            block = str(self.templates.detail_switch(ret, name, unit, cases, default))
            replacement = str(self.templates.string_message(original, name))
        elif is_literal:
            name = choose_name("decode_message", taken)
            prefix = " ".join(t.name for t in tokenize(self.data, span.start, span.end))
            block = str(self.templates.message_switch(ret, name, prefix, unit, cases, default))
            replacement = name
        else:
            return DecodeResult(advisory=f"the error message goes into `{record.target_type or '?'}` and is not a "
                                "string literal, so the reason by return code cannot be appended safely; "
                                "left unchanged")  # fmt: skip
        message_edit = self.source.make_edit(span.start, span.end, replacement, rule_id)
        return DecodeResult(self._place_block(statement, statement_parent, block, message_edit, unit),
                            note=f"message by return code via `{name}`", names={name})  # fmt: skip

    def _statement_of(self, record: Record) -> tuple[ci.Cursor, ci.Cursor | None]:
        """The statement holding the record, and its parent (a block, or the if/else holding it bare)."""
        chain = (*record.ancestors, record.node)
        for index in range(len(chain) - 1, 0, -1):
            parent = chain[index - 1]
            if parent.kind in (K.COMPOUND_STMT, K.IF_STMT, K.WHILE_STMT, K.FOR_STMT, K.DO_STMT):
                return chain[index], parent
        return record.node, None

    def _indent_unit(self, statement: ci.Cursor) -> str:
        indent = self.source.indent_at(span_of(statement).start)
        if "\t" in indent:
            return "\t"
        return "    " if len(indent) % 4 == 0 or len(indent) < 2 else "  "

    def _place_block(self, statement: ci.Cursor, parent: ci.Cursor | None, block: str, message_edit: Edit,
                     unit: str) -> list[Edit]:  # fmt: skip
        span = span_of(statement)
        newline = self.source.newline
        if parent is not None and parent.kind == K.COMPOUND_STMT and self.source.starts_line(span.start):
            indent = self.source.indent_at(span.start)
            text = "".join(indent + line + newline for line in block.split("\n"))
            point = self.source.line_start(span.start)
            return [self.source.make_edit(point, point, text, message_edit.rule), message_edit]
        # A bare statement (`if (...) set_error(...);`): wrap it and the switch in braces.
        end = _statement_end(self.data, span.end)
        indent = self.source.indent_at(span.start)
        inner = indent + unit
        body = render_range(self.data, span.start, end, [message_edit])
        lines = [inner + line for line in block.split("\n")] + [inner + body]
        text = "{" + newline + newline.join(lines) + newline + indent + "}"
        return [self.source.make_edit(span.start, end, text, message_edit.rule)]


JUMPS = {K.RETURN_STMT, K.CONTINUE_STMT, K.BREAK_STMT, K.GOTO_STMT}


def _leaves(branch: ci.Cursor) -> bool:
    """A branch that always jumps away: a return / continue / break / goto, or a block ending in one."""
    if branch.kind == K.COMPOUND_STMT:
        kids = children(branch)
        return bool(kids) and kids[-1].kind in JUMPS
    return branch.kind in JUMPS


def _switch_cases(codes: frozenset[int]) -> tuple[list[str], str]:
    """The switch's explicit cases and its default for the classes that reach the record: "fatal_or_unknown" (< -1
    fatal, else unknown), "fatal", "unknown", or the last case's own code (the variable is set on every path)."""
    cases = [str(c) for c in CASE_CODES if c in codes]
    tail = [c for c in (FATAL, UNKNOWN) if c in codes]
    if len(tail) == 2:
        return cases, "fatal_or_unknown"
    if tail:
        return cases, "fatal" if tail[0] == FATAL else "unknown"
    return cases[:-1], cases[-1]


def _codes_text(codes: frozenset[int]) -> str:
    names = {1: "1", 2: "2", -1: "-1", FATAL: "< -1", UNKNOWN: "> 2"}
    return "code " + ", ".join(names[c] for c in CODE_CLASSES if c in codes) if codes else "no code"


def _statement_end(data: bytes, end: int) -> int:
    """End of a statement including its `;` (libclang's extent of an expression statement stops before it)."""
    tokens = tokenize(data, end, min(len(data), end + 64))
    return tokens[0].end if tokens and tokens[0].text == b";" else end


def _is_string_type(spelling: str) -> bool:
    return "basic_string" in spelling or spelling.endswith("std::string")


def _is_char_pointer(type_: ci.Type) -> bool:
    return type_.kind == ci.TypeKind.POINTER and type_.get_pointee().kind in (ci.TypeKind.CHAR_S, ci.TypeKind.SCHAR)


def _is_string_literal(data: bytes, start: int, end: int) -> bool:
    tokens = tokenize(data, start, end)
    return bool(tokens) and all(t.kind == "string" for t in tokens)
