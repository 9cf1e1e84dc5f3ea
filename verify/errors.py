"""The toolkit's one base error class for problems with the user's input or environment.

It lives in `verify/` because `verify` is the lowest layer (it imports nothing from `migrate`, which imports
it). Every command turns a `ToolError` into one line naming the problem and the remedy, and exit code 2;
anything else escaping a command is a bug in the toolkit.
"""

from __future__ import annotations


class ToolError(Exception):
    """Bad input or environment: the message names the problem and, where there is one, the remedy."""


def comma_names(spec: str | None, known: tuple[str, ...] | list[str], what: str,
                error: type[ToolError] = ToolError) -> tuple[str, ...] | None:  # fmt: skip
    """A command line's `a,b` list checked against the names it may hold (None when not given); an unknown name is
    `error`, naming the known ones."""
    if not spec:
        return None
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise error(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return names
