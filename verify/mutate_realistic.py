"""The realistic mutation operators (issue 25, item 5): slips a person makes when porting a shim, not operator noise.

Each works on the shim's libclang parse, as verify/mutate.py's original seven do, and is its own family in the
report (the mutant's `kind`):

- `bool_argument`: a boolean argument of a llama.cpp call flipped (`true` ↔ `false`, `x` → `!x`, `!x` → `x`);
- `api_argument_swap`: two arguments of a llama.cpp call swapped whose parameters have the same declared type
  (`llama_pos`, `int32_t`, ... as written in the prototype, typedef names kept) and that are NOT adjacent (adjacent
  same-type swaps are the original `argument_swap` operator's; making them again would only count them twice);
- `field_source`: a struct field set from the wrong variable: `s.f = a` → `s.f = b` where `b` is another parameter
  or local in scope of the same type (through casts: `static_cast<uint32_t>(n_ctx)` → `...(n_seq_max)`), or
  `s.f = p.x` → `s.f = p.y` for another field of the same type of the same struct;
- `cleanup_drop`: a free/release/reset removed on one path: a call to `*_free`, `*_release`, `*_destroy`,
  `free`, a `delete`, or an argument-less `.reset()`, dropped where it sits on one branch of an if/else or in a
  catch handler, or where the same object is released by another statement of the function too. llama.cpp's
  memory calls (`llama_memory_clear`, `llama_kv_self_*`) are left to the original `memory_call` operator, which
  already drops every one of them (the same change counted twice would only double its weight);
- `dangling_pointer`: a pointer handed out (returned, or stored through an out-parameter or into an array) made to
  point into a local or a temporary instead of durable storage: `dup(s)` → `&(s)[0]` where a copying helper is
  given a local string/vector/array, and `g.c_str()` → `local.c_str()` where `g` has static storage and a local or
  parameter of the same type is in scope (a `const std::string &` parameter usually binds a temporary).

`visit(maker, cursor, parents)` is called by verify/mutate.py's walker for every node of a reached function; it
adds mutants through `maker.add(start, end, kind, replacement, before)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

import clang.cindex as ci

K = ci.CursorKind
T = ci.TypeKind

KINDS: dict[str, str] = {
    "bool_argument": "boolean argument of a llama.cpp call flipped",
    "api_argument_swap": "same-declared-type arguments of a llama.cpp call swapped (not adjacent)",
    "field_source": "struct field set from the wrong same-typed variable or field",
    "cleanup_drop": "free/release/reset removed on one path",
    "dangling_pointer": "pointer handed out into a local or temporary",
}

API_CALL = re.compile(r"^(?:llama|common|ggml)_\w+$")
MEMORY_CALL = re.compile(r"^llama_(?:memory|kv_self|kv_cache)_\w+$")  # the memory_call operator's (verify/mutate.py)
RELEASE_CALL = re.compile(r"(?:^|_)(?:free|release|destroy)(?:_|$)")  # llama_free, localllm_free_string_array
COPY_CALL = re.compile(r"^(?:strdup|strndup)$")  # C's copying helpers; the file's own are found by their shape
WRONG_NEIGHBOURS = 2  # field_source: candidates per site, the nearest declared
FLIP_LITERAL = {"true": "false", "false": "true"}
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
WRAPPERS = (K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CSTYLE_CAST_EXPR, K.CXX_STATIC_CAST_EXPR,
            K.CXX_FUNCTIONAL_CAST_EXPR)  # fmt: skip
FUNCTION_KINDS = (K.FUNCTION_DECL, K.CXX_METHOD, K.CONSTRUCTOR, K.DESTRUCTOR, K.FUNCTION_TEMPLATE,
                  K.CONVERSION_FUNCTION)  # fmt: skip
STATEMENT_PARENTS = (K.COMPOUND_STMT, K.IF_STMT, K.FOR_STMT, K.WHILE_STMT, K.DO_STMT, K.CASE_STMT, K.DEFAULT_STMT)
STRINGISH = re.compile(r"^(?:std::(?:__cxx11::)?basic_string<char\b|std::vector<char\b)")


class MakerSite(Protocol):
    """What verify/mutate.py's per-function walker offers (its `_Maker`)."""

    source: bytes
    path: str

    def add(self, start: int, end: int, kind: str, replacement: str, before: str) -> None: ...

    @property
    def function_cursor(self) -> ci.Cursor: ...


# --- small libclang helpers ---------------------------------------------------------------------------------------


def _start(cursor: ci.Cursor) -> int:
    return int(cursor.extent.start.offset)


def _end(cursor: ci.Cursor) -> int:
    return int(cursor.extent.end.offset)


def _text(source: bytes, cursor: ci.Cursor) -> str:
    return source[_start(cursor) : _end(cursor)].decode(errors="replace")


def _in_file(cursor: ci.Cursor, path: str) -> bool:
    start, end = cursor.extent.start, cursor.extent.end
    return start.file is not None and start.file.name == path and end.file is not None and end.file.name == path


def _callee(call: ci.Cursor) -> ci.Cursor | None:
    ref = call.referenced
    return ref if ref is not None and ref.kind in FUNCTION_KINDS else None


def _plain_type(t: ci.Type) -> str:
    """The canonical type without a reference or top-level const: what a variable of it can be assigned from."""
    if t.kind in (T.LVALUEREFERENCE, T.RVALUEREFERENCE):
        t = t.get_pointee()
    spelling = t.get_canonical().spelling
    return spelling.removeprefix("const ").removeprefix("volatile ")


def _core(expr: ci.Cursor) -> ci.Cursor:
    """The expression under implicit conversions, parentheses, casts and copy constructions (a struct passed by
    value, `llama_batch_free(batch)`, is a constructor call around `batch`)."""
    while expr.kind in WRAPPERS or (expr.kind == K.CALL_EXPR and expr.referenced is not None
                                    and expr.referenced.kind == K.CONSTRUCTOR):  # fmt: skip
        inner = [c for c in expr.get_children() if c.kind not in (K.TYPE_REF, K.NAMESPACE_REF, K.TEMPLATE_REF)]
        if len(inner) != 1:
            return expr
        expr = inner[0]
    return expr


def _is_statement(parent: ci.Cursor | None) -> bool:
    return parent is not None and parent.kind in STATEMENT_PARENTS


def _local(decl: ci.Cursor | None) -> bool:
    """A parameter or a variable with automatic storage (not static, not a global)."""
    if decl is None:
        return False
    if decl.kind == K.PARM_DECL:
        return True
    return decl.kind == K.VAR_DECL and decl.storage_class not in (ci.StorageClass.STATIC, ci.StorageClass.EXTERN) \
        and decl.semantic_parent is not None and decl.semantic_parent.kind in (*FUNCTION_KINDS, K.LAMBDA_EXPR) \
        and decl.tls_kind == ci.TLSKind.NONE  # fmt: skip


def _static_storage(decl: ci.Cursor | None) -> bool:
    return decl is not None and decl.kind == K.VAR_DECL and not _local(decl)


def _in_scope(function: ci.Cursor, parents: list[ci.Cursor], at: int) -> Iterator[ci.Cursor]:
    """Parameters and locals visible at offset `at` (declared before it in an enclosing block, or parameters of the
    function or of an enclosing lambda)."""
    yield from (c for c in function.get_children() if c.kind == K.PARM_DECL)
    for ancestor in parents:
        if ancestor.kind == K.LAMBDA_EXPR:
            yield from (c for c in ancestor.get_children() if c.kind == K.PARM_DECL)
        elif ancestor.kind in (K.COMPOUND_STMT, K.FOR_STMT, K.CXX_FOR_RANGE_STMT, K.IF_STMT, K.WHILE_STMT):
            for child in ancestor.get_children():
                if _end(child) > at:
                    break
                if child.kind == K.DECL_STMT:
                    yield from (c for c in child.get_children() if c.kind == K.VAR_DECL)
                elif child.kind == K.VAR_DECL:
                    yield child


def _flows_out(parent: ci.Cursor | None, expr: ci.Cursor) -> bool:
    """`expr` is handed out: the value of a return, or assigned through a pointer / into an array element."""
    if parent is None:
        return False
    if parent.kind == K.RETURN_STMT:
        return True
    if parent.kind != K.BINARY_OPERATOR:
        return False
    children = list(parent.get_children())
    if len(children) != 2 or _start(children[1]) != _start(expr):
        return False
    lhs = _core(children[0])
    tokens = [t.spelling for t in parent.get_tokens() if t.extent.start.offset >= _end(children[0])]
    return bool(tokens) and tokens[0] == "=" and (
        lhs.kind == K.ARRAY_SUBSCRIPT_EXPR or (lhs.kind == K.UNARY_OPERATOR and _text_of_tokens(lhs).startswith("*")))


def _text_of_tokens(cursor: ci.Cursor) -> str:
    return "".join(t.spelling for t in cursor.get_tokens())


# --- the operators ------------------------------------------------------------------------------------------------


def visit(site: MakerSite, cursor: ci.Cursor, parents: list[ci.Cursor]) -> None:
    """Every realistic mutant at `cursor` (a node of a reached function; `parents`: its ancestors in the body)."""
    parent = parents[-1] if parents else None
    if cursor.kind == K.CALL_EXPR:
        callee = _callee(cursor)
        if callee is not None and API_CALL.match(cursor.spelling or ""):
            bool_arguments(site, cursor, callee)
            far_swaps(site, cursor, callee)
        release_dropped(site, cursor, parent, parents)
        copy_made_dangling(site, cursor, callee, parent)
        static_made_dangling(site, cursor, parent, parents)
    elif cursor.kind == K.CXX_DELETE_EXPR:
        release_dropped(site, cursor, parent, parents)
    elif cursor.kind == K.BINARY_OPERATOR and _is_statement(parent):
        field_source(site, cursor, parents)


def bool_arguments(site: MakerSite, call: ci.Cursor, callee: ci.Cursor) -> None:
    for arg, param in zip(call.get_arguments(), callee.get_arguments(), strict=False):
        if param.type.get_canonical().kind != T.BOOL or not _in_file(arg, site.path):
            continue
        text = _text(site.source, arg).strip()
        if not text or "{" in text:
            continue
        if text in FLIP_LITERAL:
            flipped = FLIP_LITERAL[text]
        elif text.startswith("!") and IDENTIFIER.match(text[1:].strip()):
            flipped = text[1:].strip()
        elif IDENTIFIER.match(text):
            flipped = f"!{text}"
        else:
            flipped = f"!({text})"
        site.add(_start(arg), _end(arg), "bool_argument", flipped, text)


def far_swaps(site: MakerSite, call: ci.Cursor, callee: ci.Cursor) -> None:
    args = list(call.get_arguments())
    params = list(callee.get_arguments())
    for i in range(len(args)):
        for j in range(i + 2, min(len(args), len(params))):  # i + 1: adjacent, the argument_swap operator's
            a, b = args[i], args[j]
            if params[i].type.spelling != params[j].type.spelling:
                continue  # the prototype's own types, typedef names kept: llama_pos and llama_seq_id differ
            if _plain_type(a.type) != _plain_type(b.type) or not (_in_file(a, site.path) and _in_file(b, site.path)):
                continue
            ta, tb = _text(site.source, a), _text(site.source, b)
            if not ta or not tb or ta == tb or "{" in ta + tb or '"' in ta + tb:
                continue  # equal texts swap to the same call; a braced list or a string only garbles
            middle = site.source[_end(a) : _start(b)].decode(errors="replace")
            site.add(_start(a), _end(b), "api_argument_swap", f"{tb}{middle}{ta}", f"{ta}{middle}{tb}")


def field_source(site: MakerSite, assignment: ci.Cursor, parents: list[ci.Cursor]) -> None:
    children = list(assignment.get_children())
    if len(children) != 2 or children[0].kind != K.MEMBER_REF_EXPR:
        return
    tokens = [t.spelling for t in assignment.get_tokens() if t.extent.start.offset >= _end(children[0])]
    if not tokens or tokens[0] != "=":
        return
    source = _core(children[1])
    if not _in_file(source, site.path):
        return
    if source.kind == K.DECL_REF_EXPR and _local(source.referenced):
        _wrong_variable(site, source, parents)
    elif source.kind == K.MEMBER_REF_EXPR and source.referenced is not None \
            and source.referenced.kind == K.FIELD_DECL:  # fmt: skip
        _wrong_field(site, source)


def _declared_type(decl: ci.Cursor) -> str:
    """The type as declared (typedef names kept: `llama_token` and `int` differ), without const or a reference."""
    t = decl.type
    if t.kind in (T.LVALUEREFERENCE, T.RVALUEREFERENCE):
        t = t.get_pointee()
    return t.spelling.removeprefix("const ").removeprefix("volatile ")


def _wrong_variable(site: MakerSite, ref: ci.Cursor, parents: list[ci.Cursor]) -> None:
    """The slip is a neighbour: a parameter for a parameter, a local for a local, of the same declared type; the
    two declared nearest the right one (so a function with many ints gives two mutants per site, not ten)."""
    right = ref.referenced
    candidates = {decl.spelling: decl for decl in _in_scope(site.function_cursor, parents, _start(ref))
                  if decl.spelling and decl.get_usr() != right.get_usr() and (decl.kind == K.PARM_DECL) ==
                  (right.kind == K.PARM_DECL) and _declared_type(decl) == _declared_type(right)}  # fmt: skip
    nearest = sorted(candidates.values(), key=lambda d: (abs(_start(d) - _start(right)), d.spelling))[:WRONG_NEIGHBOURS]
    for decl in nearest:
        site.add(_start(ref), _end(ref), "field_source", decl.spelling, _text(site.source, ref))


def _wrong_field(site: MakerSite, member: ci.Cursor) -> None:
    field = member.referenced
    record = field.semantic_parent
    text = _text(site.source, member)
    if record is None or not text.endswith(field.spelling):
        return
    stem = text[: -len(field.spelling)]
    wanted = _plain_type(field.type)
    for other in record.get_children():
        if other.kind == K.FIELD_DECL and other.spelling != field.spelling and _plain_type(other.type) == wanted:
            site.add(_start(member), _end(member), "field_source", stem + other.spelling, text)


def _released_object(cursor: ci.Cursor) -> str | None:
    """The USR of what a release statement releases (its first argument's variable, or the object of `.reset()`)."""
    first = next(iter(cursor.get_arguments()), None) if cursor.kind == K.CALL_EXPR else None
    if cursor.kind == K.CXX_DELETE_EXPR:
        first = next(iter(cursor.get_children()), None)
    elif cursor.kind == K.CALL_EXPR and cursor.spelling == "reset":
        member = next(iter(cursor.get_children()), None)
        first = next(iter(member.get_children()), None) if member is not None else None
    core = _core(first) if first is not None else None
    if core is None:
        return None
    ref = core.referenced
    return ref.get_usr() if ref is not None else _text_of_tokens(core)


def _is_release(cursor: ci.Cursor) -> bool:
    if cursor.kind == K.CXX_DELETE_EXPR:
        return True
    name = cursor.spelling or ""
    if name == "reset":
        return cursor.referenced is not None and cursor.referenced.kind == K.CXX_METHOD \
            and not list(cursor.get_arguments())  # fmt: skip
    return _callee(cursor) is not None and RELEASE_CALL.search(name) is not None and not MEMORY_CALL.match(name)


def _declared_at(cursor: ci.Cursor) -> int:
    """Where the released variable is declared (0: not a local variable, e.g. a global or an expression)."""
    first = next(iter(cursor.get_arguments()), None) if cursor.kind == K.CALL_EXPR else None
    if cursor.kind == K.CXX_DELETE_EXPR:
        first = next(iter(cursor.get_children()), None)
    ref = _core(first).referenced if first is not None else None
    return _start(ref) if ref is not None and ref.kind == K.VAR_DECL and _local(ref) else 0


def _on_one_path(parents: list[ci.Cursor], declared_at: int) -> bool:
    """Inside a branch of an if/else (not its condition), a case or a catch handler that comes after the released
    variable's declaration: one of the paths out of its scope, not the whole scope it lives in."""
    for outer, inner in zip(parents, parents[1:], strict=False):
        if _start(outer) < declared_at:
            continue
        if outer.kind in (K.CXX_CATCH_STMT, K.CASE_STMT, K.DEFAULT_STMT):
            return True
        if outer.kind == K.IF_STMT:
            branches = list(outer.get_children())[1:]  # the first child is the condition
            if any(_start(b) == _start(inner) for b in branches):
                return True
    return False


def release_dropped(site: MakerSite, cursor: ci.Cursor, parent: ci.Cursor | None, parents: list[ci.Cursor]) -> None:
    if not _is_statement(parent) or not _is_release(cursor) or not _in_file(cursor, site.path):
        return
    released = _released_object(cursor)
    elsewhere = released is not None and any(
        node != cursor and _is_release(node) and _released_object(node) == released
        for node in site.function_cursor.walk_preorder() if node.kind in (K.CALL_EXPR, K.CXX_DELETE_EXPR))
    if _on_one_path([*parents, cursor], _declared_at(cursor)) or elsewhere:
        site.add(_start(cursor), _end(cursor), "cleanup_drop", "(void)0", _text(site.source, cursor))


def _copies_a_string(callee: ci.Cursor | None, name: str, path: str) -> bool:
    """A helper that returns a fresh copy of one string argument: strdup, or a function of this file returning a
    pointer and taking a single string/vector/array parameter."""
    if callee is None:
        return False
    if COPY_CALL.match(name):
        return True
    definition = callee.get_definition()
    params = list(callee.get_arguments())
    return definition is not None and _in_file(definition, path) and callee.result_type.kind == T.POINTER \
        and len(params) == 1 and _stringish(params[0].type)  # fmt: skip


def _stringish(t: ci.Type) -> bool:
    plain = _plain_type(t)
    return STRINGISH.match(plain) is not None or t.get_canonical().kind == T.CONSTANTARRAY


def copy_made_dangling(site: MakerSite, call: ci.Cursor, callee: ci.Cursor | None, parent: ci.Cursor | None) -> None:
    if not _copies_a_string(callee, call.spelling or "", site.path) or not _flows_out(parent, call):
        return
    args = list(call.get_arguments())
    if len(args) != 1 or not _stringish(_core(args[0]).type) and not _stringish(args[0].type):
        return
    arg = _text(site.source, args[0])
    if arg and _in_file(call, site.path):
        site.add(_start(call), _end(call), "dangling_pointer", f"&({arg})[0]", _text(site.source, call))


def static_made_dangling(site: MakerSite, call: ci.Cursor, parent: ci.Cursor | None,
                         parents: list[ci.Cursor]) -> None:  # fmt: skip
    if call.spelling not in ("c_str", "data") or not _flows_out(parent, call):
        return
    member = next(iter(call.get_children()), None)
    obj = _core(next(iter(member.get_children()), None)) if member is not None else None
    if obj is None or obj.kind != K.DECL_REF_EXPR or not _static_storage(obj.referenced):
        return
    wanted = _plain_type(obj.referenced.type)
    seen: set[str] = set()
    for decl in _in_scope(site.function_cursor, parents, _start(call)):
        if decl.spelling and decl.spelling not in seen and _plain_type(decl.type) == wanted:
            seen.add(decl.spelling)
            site.add(_start(obj), _end(obj), "dangling_pointer", decl.spelling, _text(site.source, obj))
