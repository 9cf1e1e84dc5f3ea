"""Anti-unification of before/after call pairs into one rule over the call's arguments.

One pair `f(a0, ..., an)` → after-call gives a template: the after-call's tokens with every argument slot (the
tokens between `(` or `,` and the next `,` or `)` of the same depth, at any nesting) that is written exactly as one
of the old call's arguments replaced by a hole `$i`. Identical argument texts go to holes in order (`f(c, 0, -1,
-1)` → `g(h(c), 0, -1, -1)` gives `g(h($0), $1, $2, $3)`). Pairs of one API generalise when their templates are
equal: the parts that differed between pairs (the arguments) are the holes, the rest is what every maintainer wrote.
A template that still names something the new API does not declare (a variable of the surrounding code: `p0`,
`model->vocab`) is context-dependent: it cannot be written from the call alone, so it proposes, never rewrites.
Two context-free templates for one API conflict, unless they are one shape with a parameter: identical but for one
argument of the new call that is a literal in each (llama.cpp's maintainers passed `true` to `llama_memory_clear` in
11 places and `false` in 2). That literal becomes an option of the rules file whose default is the value most pairs
used (Shape.OPTION); a tie between the most used values leaves no default to take, so it stays manual (Shape.TIE).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from migrate.mine.corpus import Pair, PairFate, render
from migrate.rewrite.defaults import MEMORY_HANDLE_INIT
from migrate.rewrite.tokens import tokenize

Item = str | int  # a token, or the hole of argument i
Template = tuple[Item, ...]
KEYWORDS = {"true", "false", "nullptr", "NULL", "sizeof", "const", "static_cast", "reinterpret_cast", "const_cast",
            "int", "float", "double", "bool", "char", "unsigned", "signed", "long", "short", "size_t", "int32_t",
            "int64_t", "uint32_t", "uint64_t", "void", "struct", "std", "auto", "this"}  # fmt: skip
LITERAL_WORDS = {"true", "false", "nullptr", "NULL"}
# A number literal as the lexer gives it (one token: `1`, `1.0f`, `0x10`, `1e-3`, `10u`).
LITERAL_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)[uUlLfF]*")
INTEGER = re.compile(r"-?\d+")


class Shape(StrEnum):
    """What the pairs of one API generalise into."""

    RULE = "rule"  # one context-free template reproduces every pair it was mined from
    OPTION = "option"  # templates that differ only in one literal argument: a rule with that argument an option
    CONFLICT = "conflict"  # several context-free templates of different structure: a manual rule listing them
    TIE = "tie"  # one literal argument differs, but the most used values are used equally often: manual, no default
    CONTEXT = "context"  # only context-dependent templates: a manual rule proposing the shape
    DROPS = "drops"  # one template, but it leaves out an old argument the new declaration still has room for
    NONE = "none"  # no usable pair


class Unused(StrEnum):
    """Why a use gave no pair to generalise: its fate at B, or why its after-call was not taken."""

    REMOVED = str(PairFate.REMOVED)
    NO_FUNCTION_AT_B = str(PairFate.NO_FILE)
    UNALIGNED = str(PairFate.UNALIGNED)
    AFTER_NOT_API = "after_not_api"  # the after-call is not a function of the new API
    AFTER_EXISTED = "after_existed"  # the after-call's function was declared before the bump too
    OTHER_FUNCTION = "other_function"  # a minority of the pairs call another function: a change of behaviour


@dataclass(frozen=True)
class Excluded:
    """A pair no rule was mined from: why (typed) and the reason as the provenance says it."""

    pair: Pair
    reason: str
    category: Unused


@dataclass(frozen=True)
class LiteralChoice:
    """Shapes of one API that differ in one top-level argument of the new call only, a literal in each: `slot` is
    that argument's index, `counts` each literal (as written) with its uses, the most used first."""

    slot: int
    counts: tuple[tuple[str, int], ...]

    @property
    def default(self) -> str:
        return self.counts[0][0]

    @property
    def tie(self) -> bool:
        return len(self.counts) > 1 and self.counts[0][1] == self.counts[1][1]


@dataclass
class Generalisation:
    """The pairs of one API and what they generalise into."""

    api: str
    shape: Shape
    template: Template | None = None  # for RULE, DROPS, and OPTION (there the shape the most pairs have)
    choice: LiteralChoice | None = None  # for OPTION and TIE: the argument that differs and its values
    shapes: list[tuple[Template, int]] = field(default_factory=list)  # every distinct template with its count
    used: list[Pair] = field(default_factory=list)  # the pairs the rule was mined from (it reproduces each)
    context: list[tuple[Pair, Template, list[str]]] = field(default_factory=list)  # with the free names
    unchanged: list[Pair] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)


def _slot_end(tokens: tuple[str, ...], start: int) -> int:
    """Index of the `,` or `)` that ends the argument slot starting at `start`."""
    depth = 0
    for index in range(start, len(tokens)):
        text = tokens[index]
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            if depth == 0:
                return index
            depth -= 1
        elif text == "," and depth == 0:
            return index
    return len(tokens)


def template_of(args: tuple[tuple[str, ...], ...], after: tuple[str, ...]) -> Template:
    """The after-call with each argument slot written as one of `args` replaced by its hole."""
    out: list[Item] = []
    used: set[int] = set()
    index = 0
    while index < len(after):
        if index > 0 and after[index - 1] in ("(", ","):
            end = _slot_end(after, index)
            slot = after[index:end]
            candidates = [i for i, arg in enumerate(args) if arg == slot and slot]
            if candidates:
                hole = next((i for i in candidates if i not in used), candidates[0])
                used.add(hole)
                out.append(hole)
                index = end
                continue
        out.append(after[index])
        index += 1
    return tuple(out)


def instantiate(template: Template, args: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The template with each hole filled by its argument's tokens."""
    out: list[str] = []
    for item in template:
        out += list(args[item]) if isinstance(item, int) else [item]
    return tuple(out)


def shown(template: Template) -> str:
    return render([f"${item}" if isinstance(item, int) else item for item in template])


def free_names(template: Template, names: set[str], members: set[str]) -> list[str]:
    """Identifiers of the template the new API does not declare: an object (a name before `.`/`->`: always the
    surrounding code's), a member the API's structs do not have, any other name not declared (`names`)."""
    found = []
    for index, item in enumerate(template):
        if isinstance(item, int) or not (item[:1].isalpha() or item[:1] == "_"):
            continue
        after = template[index + 1] if index + 1 < len(template) else None
        before = template[index - 1] if index > 0 else None
        if after in (".", "->"):
            free = True
        elif before in (".", "->"):
            free = item not in members
        else:
            free = item not in names and item not in KEYWORDS
        if free and item not in found:
            found.append(item)
    return found


@dataclass(frozen=True)
class Known:
    """What the two surfaces declare: names (functions, types, constants, macros) and struct members at B, and the
    functions at A (a call of one of those at B is code that was there already, not what the old call became)."""

    names: set[str]
    members: set[str]
    functions_at_b: set[str]
    functions_at_a: set[str]
    arity_at_a: dict[str, int] = field(default_factory=dict)
    arity_at_b: dict[str, int] = field(default_factory=dict)


def dropped(template: Template, api: str, known: Known) -> list[int]:
    """Old arguments the template leaves out, unless the function itself lost that many parameters (a value every
    pair happened to pass, `true`, is no reason to drop what another caller passes)."""
    holes = {item for item in template if isinstance(item, int)}
    missing = [i for i in range(known.arity_at_a.get(api, 0)) if i not in holes]
    lost = known.arity_at_a.get(api, 0) - known.arity_at_b.get(str(template[0]), 0)
    return [] if template[0] == api and lost >= len(missing) else missing


def generalise(api: str, pairs: list[Pair], known: Known) -> Generalisation:
    """The pairs of one API as a rule, a conflict, a proposal or nothing."""
    result = Generalisation(api, Shape.NONE)
    free: list[Template] = []
    for pair in pairs:
        if pair.fate == PairFate.UNCHANGED:
            result.unchanged.append(pair)
            continue
        if pair.fate != PairFate.PAIRED or pair.after is None:
            result.excluded.append(Excluded(pair, str(pair.fate), Unused(str(pair.fate))))
            continue
        callee = pair.after[0]
        if callee not in known.functions_at_b:
            result.excluded.append(Excluded(pair, f"{callee} is not a function of the new API (the diff lined up "
                                                  "other code)", Unused.AFTER_NOT_API))  # fmt: skip
            continue
        if callee != api and callee in known.functions_at_a:
            result.excluded.append(Excluded(pair, f"{callee} was declared before the bump too (the diff lined up "
                                                  "another call)", Unused.AFTER_EXISTED))  # fmt: skip
            continue
        template = template_of(pair.use.args, pair.after)
        names = free_names(template, known.names, known.members)
        if pair.surroundings:  # the call alone does not say what changed: the code around it did too
            names.append(f"surrounding code: {pair.surroundings}")
        if names:
            result.context.append((pair, template, names))
            continue
        result.used.append(pair)
        free.append(template)
    free = _majority_callee(result, free)
    counts = Counter(free)
    result.shapes = counts.most_common()
    if len(counts) == 1 and dropped(free[0], api, known):
        result.shape, result.template = Shape.DROPS, free[0]
    elif len(counts) == 1:
        result.shape, result.template = Shape.RULE, free[0]
    elif counts:
        _literal_or_conflict(result, api, known)
    elif result.context:
        result.shape = Shape.CONTEXT
        result.shapes = Counter(t for _, t, _ in result.context).most_common()
    return result


def _literal_or_conflict(result: Generalisation, api: str, known: Known) -> None:
    """Several context-free shapes: one shape with a literal parameter (OPTION, or TIE when no value is the most
    used), else a conflict. An option whose shape drops an old argument is a DROPS proposal, as a single shape is."""
    choice = literal_choice(result.shapes)
    if choice is None:
        result.shape = Shape.CONFLICT
        return
    result.choice = choice
    if choice.tie:
        result.shape = Shape.TIE
        return
    template = result.shapes[0][0]  # the shape the most pairs have: the one with the default literal
    result.shape = Shape.DROPS if dropped(template, api, known) else Shape.OPTION
    result.template = template


def literal_text(slot: Template) -> str | None:
    """The argument as a literal (`true`, `false`, `nullptr`, `NULL`, a number, a negated number), else None."""
    if any(isinstance(item, int) for item in slot):
        return None
    words = [str(item) for item in slot]
    if len(words) == 1 and words[0] in LITERAL_WORDS:
        return words[0]
    if len(words) == 2 and words[0] == "-" and LITERAL_NUMBER.fullmatch(words[1]):
        return "-" + words[1]
    if len(words) == 1 and LITERAL_NUMBER.fullmatch(words[0]):
        return words[0]
    return None


def literal_choice(shapes: list[tuple[Template, int]]) -> LiteralChoice | None:
    """The one top-level argument in which the shapes (one call each, of one function, with as many arguments)
    differ, when it is a literal in every shape; None when they differ anywhere else, or in more than one argument
    (values chosen together are not independent options)."""
    slotted = [_top_slots(template) for template, _ in shapes]
    if any(slots is None for slots in slotted):
        return None
    calls = {(template[0], len(slots or ())) for (template, _), slots in zip(shapes, slotted, strict=True)}
    if len(calls) != 1:
        return None
    columns = list(zip(*[slots or () for slots in slotted], strict=True))
    differing = [index for index, column in enumerate(columns) if len(set(column)) > 1]
    if len(differing) != 1:
        return None
    literals = [literal_text(slot) for slot in columns[differing[0]]]
    if any(text is None for text in literals):
        return None
    counted = Counter[str]()
    for text, (_, count) in zip(literals, shapes, strict=True):
        counted[str(text)] += count
    return LiteralChoice(differing[0], tuple(counted.most_common()))


def literal_of(pair: Pair, slot: int) -> str | None:
    """The literal a pair's after-call passes at top-level argument `slot` (None: not a literal there)."""
    if pair.after is None:
        return None
    slots = _top_slots(template_of(pair.use.args, pair.after))
    return literal_text(slots[slot]) if slots is not None and slot < len(slots) else None


def option_value(text: str, choice: LiteralChoice) -> bool | int | str:
    """A literal as the option's value in the rules file: a boolean when every value is true/false, an integer when
    every value is a decimal integer, else the literal's text (written into the fix as it is)."""
    values = [value for value, _ in choice.counts]
    if all(value in ("true", "false") for value in values):
        return text == "true"
    if all(INTEGER.fullmatch(value) for value in values):
        return int(text)
    return text


def _majority_callee(result: Generalisation, free: list[Template]) -> list[Template]:
    """The templates calling the function most pairs call, when that is more than half of them; the pairs that call
    another function are moved to `excluded`: there the maintainers changed what the code does (mtmd-cli's /clear
    went from removing all but BOS to clearing the memory), which is not the API's migration."""
    callees = Counter(t[0] for t in free)
    if len(callees) < 2:
        return free
    callee, count = callees.most_common(1)[0]
    if count * 2 <= len(free):
        return free  # no majority: every shape stays, a conflict
    kept_pairs, kept = [], []
    for pair, template in zip(result.used, free, strict=True):
        if template[0] == callee:
            kept_pairs.append(pair)
            kept.append(template)
        else:
            result.excluded.append(Excluded(pair, f"the maintainers called {template[0]} here instead of {callee} "
                                                  f"(as {count} other use(s) do): a change of behaviour",
                                            Unused.OTHER_FUNCTION))  # fmt: skip
    result.used = kept_pairs
    return kept


def handle_template() -> Template:
    """The memory handle's initialiser as a template over argument 0 (`llama_get_memory($0)`)."""
    text = MEMORY_HANDLE_INIT.replace("{ctx}", "HOLE_0")
    return tuple(0 if t.name == "HOLE_0" else t.name for t in tokenize(text.encode()))


class FixKind(StrEnum):
    MEMORY_CALL = "memory_call"
    CALL_REWRITE = "call_rewrite"


@dataclass(frozen=True)
class Fix:
    kind: FixKind
    text: str  # the rules file's fix template


def _top_slots(template: Template) -> list[Template] | None:
    """The top-level argument slots of a call template `name ( ... )`, or None when it is not one call."""
    if len(template) < 3 or template[1] != "(" or template[-1] != ")" or isinstance(template[0], int):
        return None
    slots: list[Template] = []
    current: list[Item] = []
    depth = 0
    for item in template[2:-1]:
        if item in ("(", "[", "{"):
            depth += 1
        elif item in (")", "]", "}"):
            depth -= 1
            if depth < 0:
                return None
        if item == "," and depth == 0:
            slots.append(tuple(current))
            current = []
            continue
        current.append(item)
    if current or slots:
        slots.append(tuple(current))
    return slots


def with_placeholder(template: Template, slot: int, name: str) -> Template:
    """The call template with its top-level argument `slot` replaced by the placeholder `{name}` (an option)."""
    slots = _top_slots(template)
    assert slots is not None and slot < len(slots), (template, slot)
    items: list[Item] = [template[0], "("]
    for index, current in enumerate(slots):
        if index:
            items.append(",")
        items += [f"{{{name}}}"] if index == slot else list(current)
    return (*items, ")")


def _slot_text(slot: Template) -> str:
    return render([f"{{args[{item}]}}" if isinstance(item, int) else item for item in slot])


def fix_for(template: Template, arity: int) -> Fix:
    """The rule kind and fix template for a rule's template: a call whose first argument is the memory handle of
    argument 0 is a `memory_call` (`{mem}`: hoisted or inline by the engine's option), anything else a
    `call_rewrite` (`{args[i]}`, `{rest}` for the old arguments after the first, in order)."""
    slots = _top_slots(template)
    name = str(template[0])
    handle = handle_template()
    if slots and slots[0] == handle and not any(0 in s for s in slots[1:]):
        return Fix(FixKind.MEMORY_CALL, f"{name}({_rest_or_slots(slots[1:], arity, ['{mem}'])})")
    if slots is None:
        return Fix(FixKind.CALL_REWRITE, render([f"{{args[{i}]}}" if isinstance(i, int) else i for i in template]))
    if slots and slots[0] == (0,) and arity >= 2:
        return Fix(FixKind.CALL_REWRITE, f"{name}({_rest_or_slots(slots[1:], arity, ['{args[0]}'])})")
    return Fix(FixKind.CALL_REWRITE, f"{name}({', '.join(_slot_text(s) for s in slots if s)})")


def _rest_or_slots(slots: list[Template], arity: int, head: list[str]) -> str:
    """`{rest}` (the old arguments after the first, as written) when the slots are exactly those, else each slot."""
    if arity >= 2 and slots == [(i,) for i in range(1, arity)]:
        return ", ".join([*head, "{rest}"])
    return ", ".join([*head, *(_slot_text(s) for s in slots if s)])


def apply_fix(fix: Fix, args: list[str], options: dict[str, str] | None = None) -> str:
    """The fix written out for a call's arguments (texts as written) and its options' values (as source text), as the
    engine writes it with the handle inline: what a rule's case expects."""
    text = fix.text.replace("{mem}", MEMORY_HANDLE_INIT.replace("{ctx}", args[0] if args else ""))
    for name, value in (options or {}).items():
        text = text.replace(f"{{{name}}}", value)
    text = text.replace("{rest}", ", ".join(args[1:]))
    for index, arg in enumerate(args):
        text = text.replace(f"{{args[{index}]}}", arg)
    return text


def reproduces(fix: Fix, pair: Pair, options: dict[str, str] | None = None) -> bool:
    """Whether the fix, written for the pair's old arguments (and `options`, the values this pair's call had),
    gives the pair's after-call (token for token)."""
    if pair.after is None:
        return False
    written = apply_fix(fix, [render(a) for a in pair.use.args], options)
    return tuple(t.name for t in tokenize(written.encode())) == pair.after


def most_general(templates: list[Template]) -> str:
    """The templates' anti-unifier for display: their common tokens, each stretch where they differ a `?`."""
    first = [shown((item,)) for item in templates[0]]
    for other in templates[1:]:
        second = [shown((item,)) for item in other]
        merged: list[str] = []
        for tag, i1, i2, _j1, _j2 in difflib.SequenceMatcher(None, first, second, autojunk=False).get_opcodes():
            merged += first[i1:i2] if tag == "equal" else ["?"]
        first = merged
    return render(first)
