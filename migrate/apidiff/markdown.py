"""The API diff as a report section: counts, compact lists of what changed (with file:line on both sides where a
change is not self-evident from its name), and the consumer's uses."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from migrate.apidiff.compare import ApiDiff
from migrate.apidiff.xref import CrossReference

COUNT_LABELS = {"functions": "functions", "fields": "struct fields", "enum_constants": "enum constants",
                "types": "types", "macros": "macros", "headers": "headers", "moved": "moved to another header",
                "defaults": "params defaults"}  # fmt: skip


def _cell(text: str | None) -> str:
    if not text:
        return "—"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _names(items: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in items) or "—"


def _grouped(items: Iterable, group: str, name: str) -> list[str]:
    """Long lists as one line per group (header, struct or enum): `group`: `a`, `b`, ..."""
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(getattr(item, group), []).append(getattr(item, name))
    return [f"- `{key}`: {_names(values)}" for key, values in groups.items()]


def _counts_table(diff: ApiDiff) -> list[str]:
    rows = ["| | removed | added | changed | newly deprecated |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, counts in diff.counts().items():
        removed = counts.get("removed", "")
        changed = counts.get("changed", counts.get("renamed", counts.get("moved", "")))
        added, deprecated = counts.get("added", ""), counts.get("deprecated", "")
        rows.append(f"| {COUNT_LABELS[key]} | {removed} | {added} | {changed} | {deprecated} |")
    return rows


def _functions_section(diff: ApiDiff) -> list[str]:
    lines = [f"#### Functions removed ({len(diff.removed_functions)})", *_grouped(diff.removed_functions, "header",
             "name")]  # fmt: skip
    lines += ["", f"#### Functions re-signatured ({len(diff.changed_functions)})"]
    if diff.changed_functions:
        lines += ["| function | before | after |", "| --- | --- | --- |"]
        lines += [f"| `{c.name}` | {_cell(c.old.declaration)} | {_cell(c.new_declarations())} |"
                  for c in diff.changed_functions]  # fmt: skip
    lines += ["", f"#### Functions newly deprecated ({len(diff.deprecated_functions)})"]
    lines += [f"- `{d.name}`: {d.deprecation_hint or 'deprecated'}" for d in diff.deprecated_functions]
    lines += ["", f"#### Functions added ({len(diff.added_functions)})", *_grouped(diff.added_functions, "header",
              "name")]  # fmt: skip
    return lines


def _fields_section(diff: ApiDiff) -> list[str]:
    lines = [
        f"#### Struct fields removed ({len(diff.removed_fields)})",
        *_grouped(diff.removed_fields, "struct", "name"),
    ]
    lines += ["", f"#### Struct fields retyped ({len(diff.retyped_fields)})"]
    if diff.retyped_fields:
        lines += ["| field | before | after |", "| --- | --- | --- |"]
        lines += [f"| `{c.old.key}` | {_cell(c.old.type)} | {_cell(c.new.type)} |" for c in diff.retyped_fields]
    lines += [
        "",
        f"#### Struct fields added ({len(diff.added_fields)})",
        *_grouped(diff.added_fields, "struct", "name"),
    ]
    return lines


def _enums_and_types_section(diff: ApiDiff) -> list[str]:
    lines = [f"#### Enum constants removed ({len(diff.removed_constants)})",
             *_grouped(diff.removed_constants, "enum", "name")]  # fmt: skip
    lines += ["", f"#### Enum constants re-valued ({len(diff.revalued_constants)})"]
    lines += [f"- `{c.old.name}`: {c.old.value} → {c.new.value}" for c in diff.revalued_constants]
    lines += ["", f"#### Enum constants added ({len(diff.added_constants)})",
              *_grouped(diff.added_constants, "enum", "name")]  # fmt: skip
    lines += ["", f"#### Types removed ({len(diff.removed_types)})", _names(t.key for t in diff.removed_types)]
    lines += ["", f"#### Types changed ({len(diff.changed_types)})"]
    lines += [f"- `{c.old.name}`: {_cell(c.old.underlying)} → {_cell(c.new.underlying)}" for c in diff.changed_types]
    lines += ["", f"#### Types added ({len(diff.added_types)})", _names(t.key for t in diff.added_types)]
    return lines


def _headers_section(diff: ApiDiff) -> list[str]:
    lines = []
    if diff.removed_headers:
        lines += [f"#### Headers removed or renamed ({len(diff.removed_headers)})"]
    for change in diff.removed_headers:
        went = ", ".join(f"`{header}` ({n})" for header, n in sorted(change.moved_to.items(), key=lambda x: -x[1]))
        target = f" → `{change.new.file}`" if change.new else ""
        lines.append(f"- `{change.header}`: {change.kind.value}{target}; its declarations moved to: {went or '—'}, "
                     f"{change.gone} gone (listed as removed)")  # fmt: skip
    if diff.moved:
        lines += ["", f"#### Declarations moved to another header ({len(diff.moved)})"]
        lines += [f"- {m.kind.value} `{m.name}`: {m.old} → {m.new}" for m in diff.moved]
    return lines


def _macros_section(diff: ApiDiff) -> list[str]:
    lines = [f"#### Macros removed ({len(diff.removed_macros)})", *_grouped(diff.removed_macros, "header", "name")]
    lines += ["", f"#### Macros changed ({len(diff.changed_macros)})"]
    lines += [f"- `{c.old.name}`: {_cell(c.old.value)} ({c.old.where}) → {_cell(c.new.value)} ({c.new.where})"
              for c in diff.changed_macros]  # fmt: skip
    lines += ["", f"#### Macros added ({len(diff.added_macros)})", *_grouped(diff.added_macros, "header", "name")]
    return lines


def _defaults_section(diff: ApiDiff) -> list[str]:
    """Only when some default changed: code that sets the field is unaffected, code relying on it is."""
    if not diff.changed_defaults:
        return []
    lines = [f"#### Params defaults changed ({len(diff.changed_defaults)})",
             "Code that sets the field compiles and means the same; code that relies on the default now gets another "
             "value.", "", "| field | before | after | set by |", "| --- | --- | --- | --- |"]  # fmt: skip
    for change in diff.changed_defaults:
        old, new = change.old, change.new
        by = f"`{new.function}()`" if new.function else new.source.value
        lines.append(f"| `{change.key}` | {_cell(old.shown())} ({old.where}) | {_cell(new.shown())} ({new.where}) "
                     f"| {by} |")  # fmt: skip
    return lines


def _xref_section(xref: CrossReference, base: Path | None) -> list[str]:
    total = len(xref.covered) + len(xref.manual) + len(xref.review)
    lines = ["### API cross reference", "",
             f"{total} uses of removed or changed API: {len(xref.covered)} covered by rules, **{len(xref.manual)} "
             f"manual action(s) required**, {len(xref.review)} to review (they still compile).", ""]  # fmt: skip
    if xref.internal:  # absent for a consumer that includes none: the listing stays as it was
        lines += ["llama.cpp internals this code includes (outside the public headers: not covered by llama.cpp's "
                  "API stability), each diffed between the two trees and cross-referenced with the rest:", ""]
        lines += [f"- `{header}`: {what}" for header, what in xref.internal.items()] + [""]
    if xref.manual:
        lines += ["#### Manual action required", "", "| where | symbol | change | old declaration | new declaration |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for use in xref.manual:
            change = use.kind.value + (" (via macro)" if use.in_macro else "")
            change += f" — *{use.note}*" if use.note else ""
            lines.append(f"| {use.where(base)} | `{use.symbol}` | {change} | {_cell(use.old)} | {_cell(use.new)} |")
        lines.append("")
    if xref.review:
        lines += ["#### To review: uses that still compile", "", "| where | symbol | change | why |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {use.where(base)} | `{use.symbol}` | {use.kind.value} | {_cell(use.note or '')} |"
                  for use in xref.review]  # fmt: skip
        lines.append("")
    if xref.covered:
        lines += ["#### Covered by rules", "", "| where | symbol | change |", "| --- | --- | --- |"]
        lines += [f"| {use.where(base)} | `{use.symbol}` | {use.kind.value} |" for use in xref.covered]
        lines.append("")
    if xref.parse_errors:
        lines += ["Parse errors (uses in code libclang could not read may be missing):", ""]
        lines += [f"- {error}" for error in xref.parse_errors[:20]]
    return lines


def to_markdown(diff: ApiDiff, xref: CrossReference | None = None, base: Path | None = None) -> str:
    """The report section: counts, compact lists of what changed, and the consumer's uses (paths below `base`
    shown relative)."""
    lines = [f"### API diff: {diff.old} → {diff.new}", "", f"Headers compared: {_names(diff.headers)}", ""]
    lines += _counts_table(diff) + [""]
    for section in (_headers_section, _functions_section, _fields_section, _defaults_section,
                    _enums_and_types_section, _macros_section):  # fmt: skip
        found = section(diff)
        lines += [*found, ""] if found else []
    if xref is not None:
        lines += _xref_section(xref, base.resolve() if base else None)
    return "\n".join(lines).rstrip() + "\n"
