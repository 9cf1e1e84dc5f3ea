"""Compare two `migrate plan --json` files byte for byte, except for the files the second one lists as naming
nothing (`files[].mode == "names-nothing"`: not parsed, or not parseable, and naming nothing listed).

    .venv/bin/python scripts/compare_plan_json.py BEFORE.json AFTER.json [--root-before DIR --root-after DIR]

The plan of the same tree made by two checkouts differs in `root` (where the tree lies) and in nothing else that
does not come from the plan itself; `--root-*` says which prefix stands for which. Both are re-serialised as the
CLI writes them (indent 2, ensure_ascii False) after the entries of the names-nothing files are taken from AFTER
into BEFORE, then compared as bytes. Exit 0 identical; 1 different (the first differing lines are printed); 2 bad
input.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

NAMES_NOTHING = "names-nothing"


def serialise(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, ensure_ascii=False) + "\n"


def aligned(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """BEFORE with AFTER's entries for the files AFTER lists as naming nothing; and those files."""
    nothing = {f["path"]: f for f in after.get("files", []) if f.get("mode") == NAMES_NOTHING}
    files = [nothing.get(f["path"], f) for f in before.get("files", [])]
    return {**before, "files": files}, sorted(nothing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--root-before", default=None)
    parser.add_argument("--root-after", default=None)
    args = parser.parse_args(argv)
    try:
        before_text, after_text = args.before.read_text(encoding="utf-8"), args.after.read_text(encoding="utf-8")
        if args.root_before and args.root_after:
            before_text = before_text.replace(args.root_before, args.root_after)
        before, after = json.loads(before_text), json.loads(after_text)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"compare_plan_json: {exc}", file=sys.stderr)
        return 2
    before, nothing = aligned(before, after)
    old, new = serialise(before), serialise(after)
    listed = ", ".join(nothing) if nothing else "none"
    if old == new:
        print(f"identical ({len(new.encode())} bytes) except the files now listed as naming nothing: {listed}")
        return 0
    print(f"DIFFERENT (files now listed as naming nothing: {listed}):")
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "before", "after", lineterm="", n=1)
    for line in list(lines)[:60]:
        print(line)
    return 1


if __name__ == "__main__":
    sys.exit(main())
