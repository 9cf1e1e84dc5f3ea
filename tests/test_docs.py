"""The documentation is checked against the code: every `migrate <command> --flag` that README.md and docs/*.md
show exists in the real argparse parser (migrate/cli/), every llama-migrate.toml key they name exists in the
config model, and every relative link resolves (file, and heading anchor where one is given). The exit-code table
is checked by tests/test_hardening_inputs.py (`test_readme_exit_code_table_matches_the_code`), on whichever page
holds it. Each checker is also run on a planted mistake, so none of them can pass by finding nothing."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\s*$")
INLINE_CODE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # a span may wrap onto the next line
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
# `migrate` as a command: at the start, after whitespace or an assignment (`LLAMA_MIGRATE_PLAN_JOBS=0 migrate`), or
# as a path's last part (`.venv/bin/migrate`); never `llama-migrate`, `migrate/`, `migrate.cli`
COMMAND = re.compile(r"(?:^|(?<=[\s/=(]))migrate((?:[ \t]+[^\s;&>]+)*)")
SHELL_STOPS = {"|", "||", "&&", ";", ">", "2>", "2>&1", "&"}
PLACEHOLDER = re.compile(r"^(<.*|COMMAND|\.\.\.|…)$")


@dataclass(frozen=True)
class Text:
    """A piece of a page: prose (outside fenced blocks) or a fenced block with its language."""

    page: Path
    line: int
    body: str
    fence: str | None  # None: prose; "" or "sh", "toml", ... for a fenced block


def pieces(page: Path) -> Iterator[Text]:
    lines = page.read_text(encoding="utf-8").splitlines()
    start, fence, chunk = 1, None, []
    for number, line in enumerate(lines, 1):
        opened = FENCE.match(line)
        if opened and fence is None:
            yield Text(page, start, "\n".join(chunk), None)
            start, fence, chunk = number + 1, opened.group(1), []
        elif line.startswith("```") and fence is not None:
            yield Text(page, start, "\n".join(chunk), fence)
            start, fence, chunk = number + 1, None, []
        else:
            chunk.append(line)
    yield Text(page, start, "\n".join(chunk), fence)


def where(text: Text, offset: int) -> str:
    name = text.page.relative_to(REPO) if text.page.is_relative_to(REPO) else text.page.name
    return f"{name}:{text.line + text.body.count(chr(10), 0, offset)}"


# --- commands and flags --------------------------------------------------------------------------------------------


def command_mentions(text: Text) -> Iterator[tuple[str, str]]:
    """(place, the words after `migrate`) for each command in code: inline spans of prose, lines of shell blocks."""
    if text.fence is None:
        spans = ((m.start(1), m.group(1).replace("\\|", "|").replace("\n", " "))
                 for m in INLINE_CODE.finditer(text.body))  # fmt: skip
    elif text.fence in ("", "sh", "bash", "console", "shell"):
        spans = ((m.start(), m.group()) for m in re.finditer(r"[^\n]+", text.body))
    else:
        return
    for offset, span in spans:
        for found in COMMAND.finditer(span):
            yield where(text, offset), found.group(1)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def words(args: str) -> list[str]:
    """The words of a command as documented: option brackets dropped, shell operators end it."""
    try:
        raw = shlex.split(args.replace("[", " ").replace("]", " "), comments=True)
    except ValueError:  # an unbalanced quote in a shortened example
        raw = args.replace("[", " ").replace("]", " ").split()
    kept: list[str] = []
    for word in raw:
        if word in SHELL_STOPS:
            break
        kept.append(word)
    return kept


def problems_of_command(args: str, root: argparse.ArgumentParser) -> list[str]:
    """What is wrong with `migrate <args>`: an unknown sub-command, a flag its parser (or its action's, as in
    `migrate rules draft`) lacks. `build|run|gate` and `run/gate` name several: the flags must exist in each."""
    rest = words(args)
    while rest and rest[0] in root._option_string_actions:  # `migrate --cache DIR plan ...`
        rest = rest[2:] if root._option_string_actions[rest[0]].nargs != 0 else rest[1:]
    parsers, chain = [root], ["migrate"]
    while len(parsers) == 1 and subparsers(parsers[0]) and rest and not rest[0].startswith("-"):
        if PLACEHOLDER.match(rest[0]):
            return []
        choices = subparsers(parsers[0])
        names = re.split(r"[|/]", rest[0].rstrip(":,."))
        unknown = [name for name in names if name not in choices]
        if unknown and parsers[0] is root:
            return [f"migrate has no sub-command {'/'.join(unknown)}"]
        if unknown:  # not an action (`migrate rules check FILE`): the flags are the sub-command's
            break
        chain.append(rest[0])
        parsers, rest = [choices[name] for name in names], rest[1:]
    return [f"{' '.join(chain)}: {problem}" for problem in flag_problems(rest, parsers)]


def flag_problems(rest: list[str], parsers: list[argparse.ArgumentParser]) -> list[str]:
    out = []
    for word in rest:
        if not word.startswith("--") or word == "--":
            continue
        flag = re.split(r"[=,:;)]", word, maxsplit=1)[0].rstrip(".")
        missing = [p.prog for p in parsers if flag not in p._option_string_actions]
        if missing:
            out.append(f"no flag {flag} ({', '.join(missing)})")
    return out


def command_problems(pages: list[Path]) -> list[str]:
    from migrate.cli import build_parser

    root = build_parser()
    found = []
    for page in pages:
        for text in pieces(page):
            for place, args in command_mentions(text):
                found += [f"{place}: `migrate{args}`: {problem}" for problem in problems_of_command(args, root)]
    return found


def test_every_documented_command_and_flag_exists() -> None:
    problems = command_problems(PAGES)
    assert not problems, "\n".join(problems)


def test_the_command_check_reads_the_docs() -> None:
    """It finds commands at all: the README's two and the reference table's."""
    mentions = [args.split()[0] for page in PAGES for text in pieces(page) for _, args in command_mentions(text)
                if args.split()]  # fmt: skip
    assert {"run", "gate", "plan", "apply", "verify", "build", "mutate", "rules"} <= set(mentions)


def test_a_made_up_flag_or_command_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Run `migrate plan SRC --from b5421 --no-such-flag` or\n\n```sh\nmigrate frobnicate x\n"
                    ".venv/bin/migrate rules draft --from b7785 --to b10361 --outt F\nmigrate run/gate --gpu cuda\n"
                    "```\n`migrate build|run|gate --llama-build auto`, `migrate verify --lib X --checkz a`\n")
    problems = command_problems([page])
    assert [p.split(": ", 2)[-1] for p in problems] == [
        "migrate plan: no flag --no-such-flag (migrate plan)", "migrate has no sub-command frobnicate",
        "migrate rules draft: no flag --outt (migrate rules draft)",
        "migrate verify: no flag --checkz (migrate verify)",
    ], problems  # fmt: skip


# --- llama-migrate.toml keys ---------------------------------------------------------------------------------------


def key_problem(path: tuple[str, ...]) -> str | None:
    """None when the key path exists in the config model, else why not. Tables whose keys are the consumer's own
    names (rule options, a function's parameters, `[verify.functions.NAME]`) are not looked into."""
    from migrate.build_settings import BUILD_KEYS
    from migrate.config import KNOWN_KEYS
    from verify.baseline import ENTRY_KEYS
    from verify.binding import ALL_OPS, OpConfig, VerifyConfig, VerifyConfigError
    from verify.reference import COMMON_FIELDS, ReferenceConfig

    head, rest = path[0], path[1:]
    if head not in KNOWN_KEYS:
        return f"{head} is no key of llama-migrate.toml (migrate/config.py KNOWN_KEYS)"
    if not rest or head in ("options", "mutants"):
        return None
    if head == "build":
        return None if rest[0] in BUILD_KEYS and len(rest) == 1 else f"build.{'.'.join(rest)} is not in BUILD_KEYS"
    if head != "verify":
        return f"{head} is not a table"
    try:  # the [verify] reader itself: an unknown key is refused there
        VerifyConfig.from_table({rest[0]: "x"})
    except VerifyConfigError as exc:
        return f"verify.{rest[0]}: {exc}"
    inner = rest[1:]
    if not inner or rest[0] == "functions":
        return None
    if rest[0] in ALL_OPS:
        ok = inner[0] in {f.name for f in fields(OpConfig)} and (len(inner) == 1 or inner[0] == "params")
        return None if ok else f"verify.{rest[0]}.{'.'.join(inner)}: an operation takes function, params, success"
    if rest[0] == "reference":
        if inner[0] not in {f.name for f in fields(ReferenceConfig)}:
            return f"verify.reference.{inner[0]} is not a field of ReferenceConfig"
        if len(inner) > 1 and (inner[0] != "fixed" or inner[1] not in COMMON_FIELDS or len(inner) > 2):
            return f"verify.reference.{'.'.join(inner)}: fixed takes {', '.join(COMMON_FIELDS)}"
        return None
    if rest[0] == "known_failures":
        return None if len(inner) == 1 and inner[0] in ENTRY_KEYS else f"known_failures entries take {ENTRY_KEYS}"
    return f"verify.{'.'.join(rest)}: {rest[0]} takes no keys"


def toml_paths(data: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from toml_paths(value, (*prefix, key))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from toml_paths(item, (*prefix, key))


TABLE_SPAN = re.compile(r"^\[(?:tool\.llama-migrate\.?)?([\w.]*)\](?:\s+(\w+))?")
KEY_ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)*)` \|", re.M)


def config_keys(page: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(place, key path) for each key a page names: in ```toml blocks, in inline `[table] key` spans, and in the key
    table of docs/configuration.md (rows starting with a dotted key in code)."""
    from migrate.config import KNOWN_KEYS

    for text in pieces(page):
        if text.fence == "toml":
            data = tomllib.loads(text.body)
            data = data.get("tool", {}).get("llama-migrate", data) if "tool" in data else data
            yield from ((where(text, 0), path) for path in toml_paths(data))
        elif text.fence is None:
            for m in INLINE_CODE.finditer(text.body):
                span = TABLE_SPAN.match(m.group(1))
                # a table of ours (`[verify]`, `[tool.llama-migrate]`) or any `[table] key`; not pytest's `[old]`
                if not span or not (span.group(2) or span.group(1).split(".")[0] in KNOWN_KEYS):
                    continue
                path = tuple(p for p in span.group(1).split(".") if p and p != "NAME")
                yield where(text, m.start()), (*path, *([span.group(2)] if span.group(2) else []))
            if page.name == "configuration.md":
                yield from ((where(text, m.start()), tuple(m.group(1).split("."))) for m in KEY_ROW.finditer(text.body))


def key_problems(pages: list[Path]) -> list[str]:
    found = []
    for page in pages:
        for place, path in config_keys(page):
            problem = key_problem(path) if path else None
            if problem:
                found.append(f"{place}: {'.'.join(path)}: {problem}")
    return found


def test_every_documented_config_key_exists() -> None:
    problems = key_problems(PAGES)
    assert not problems, "\n".join(problems)


def test_the_key_check_reads_the_docs() -> None:
    named = {path for page in PAGES for _, path in config_keys(page)}
    from migrate.config import KNOWN_KEYS

    assert {(key,) for key in KNOWN_KEYS} <= named, "docs/configuration.md lists every top-level key"
    assert ("build", "flags") in named and ("verify", "reference", "parse_special") in named


def test_a_made_up_key_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text("```toml\n[build]\nflagz = []\n[verify.reference]\nparse_special = true\n"
                    "[verify.reference.fixed]\nmin_q = 0.1\n```\n\n"
                    "Set `[verify] testz = [\"x\"]` or `[verifyy] tests`, not `[old]`.\n\n"
                    "| key |\n| --- |\n| `max_tps_regresion` |\n| `verify.generate.params` |\n"
                    "| `verify.known_failures.check` |\n")  # fmt: skip
    problems = [p.split(": ", 1)[1] for p in key_problems([page])]
    assert [p.split(":")[0] for p in problems] == ["build.flagz", "verify.reference.fixed.min_q", "verify.testz",
                                                   "verifyy.tests", "max_tps_regresion"], problems  # fmt: skip


# --- links ---------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, spaces, hyphens kept),
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for text in pieces(page):
        if text.fence is not None:
            continue
        for m in re.finditer(r"^#{1,6} (.+)$", text.body, re.M):
            base = slug(m.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def link_targets(page: Path) -> Iterator[tuple[str, str]]:
    for text in pieces(page):
        if text.fence is None:
            body = INLINE_CODE.sub(lambda m: " " * len(m.group()), text.body)  # `[x](y)` in code is no link
            yield from ((where(text, m.start()), m.group(1)) for m in LINK.finditer(body))


def link_problems(pages: list[Path]) -> list[str]:
    found = []
    for page in pages:
        for place, target in link_targets(page):
            if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto: — not ours to check offline
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists():
                found.append(f"{place}: {target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                found.append(f"{place}: {target}: no heading #{anchor} in {path.name}")
    return found


def test_every_relative_link_resolves() -> None:
    problems = link_problems(PAGES)
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached or not page.is_file() or page.suffix != ".md":
            continue
        reached.add(page)
        todo += [(page.parent / t.partition("#")[0]).resolve() for _, t in link_targets(page) if ":" not in t]
    unreached = sorted(page.name for page in set(PAGES) - reached)
    assert not unreached, f"not linked from README.md (directly or through a linked page): {unreached}"


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: with punctuation (1–4)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-code-heading-with-punctuation-14) [gone](missing.md) "
                    "[bad anchor](other.md#nope) [web](https://example.invalid) `[code](not-a-link.md)`\n")  # fmt: skip
    assert [p.split(": ", 1)[1] for p in link_problems([page])] == [
        "missing.md: no such file", "other.md#nope: no heading #nope in other.md"]


def test_the_readme_stays_short() -> None:
    """A newcomer's page: what it is, the two commands, a first example, the test command, links."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 160, f"README.md has {lines} lines: move reference material to docs/"


@pytest.mark.parametrize("script", ["scripts/test.sh", "scripts/run.sh"])
def test_the_readme_names_the_two_scripts(script: str) -> None:
    assert f"\n{script}" in (REPO / "README.md").read_text(encoding="utf-8")
