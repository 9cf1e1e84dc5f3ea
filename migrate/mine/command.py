"""`migrate rules mine`: rules mined from the migrations llama.cpp's maintainers (and a consumer) already made.

    migrate rules mine --from b5421 --to b7785 [-o FILE]
    migrate rules mine --from b7785 --to b10361 --corpus OLD_ADDON=NEW_ADDON [--compare DIR ...]

Writes a rules file (default <cache>/rules-mined/<from>-<to>.yaml, schema of rules/*.yaml, every rule `mined: true`
with provenance), runs each rewriting rule's cases through the engine (--no-engine-check skips that), and, when a
hand-written rules file covers exactly this step, reports each mined rule against it (confirmed, differs,
unconfirmed, ...: precision). --compare DIR plans a consumer tree with both and compares their call rewrites as the
set of (file, line, after-text), the memory handle inline on both sides. See docs/rules-mining.md.

Exit codes: 0 done; 2 bad input (unknown build, a --corpus that is not OLD=NEW folders, an unwritable -o).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from migrate.exit_codes import RulesExit
from migrate.paths import cache_root
from verify.inputs import BadInput, PathKind, existing_path, output_file

if TYPE_CHECKING:
    from migrate.rewrite.rules import RuleSet
    from migrate.sources import SourceTree


@dataclass(frozen=True)
class MineRequest:
    """What one `migrate rules mine` was asked to do."""

    from_version: str
    to_version: str
    corpus: tuple[str, ...] = ()  # OLD=NEW folder pairs, as given
    out: str | None = None  # None: <cache>/rules-mined/<from>-<to>.yaml
    compare: tuple[str, ...] = ()  # consumer trees to plan with the hand and the mined rules
    engine_check: bool = True  # run the mined rules' cases through the engine
    cache: str | None = None


def _corpus_folders(spec: str) -> tuple[Path, Path]:
    old, sep, new = spec.partition("=")
    if not sep:
        raise BadInput("--corpus", spec, "is one folder", "give OLD=NEW: the same code at --from and at --to (e.g. "
                       "node-llama-cpp's llama/addon of two releases)")  # fmt: skip
    return (existing_path("--corpus", old, PathKind.DIR, noun="folder"),
            existing_path("--corpus", new, PathKind.DIR, noun="folder"))  # fmt: skip


def mine_rules(request: MineRequest) -> int:
    from migrate.apidiff import load_surface
    from migrate.mine import folder_corpus, mine, pairs_summary, render_file, tree_corpus
    from migrate.rewrite.rules import RuleError, find_rules, load_rules
    from migrate.sources import resolve

    cache = request.cache
    folders = [_corpus_folders(spec) for spec in request.corpus]
    compare = [existing_path("--compare", d, PathKind.DIR, noun="folder") for d in request.compare]
    output_file("-o", request.out, makes_folder=True)
    old_tree, new_tree = resolve(request.from_version, cache=cache), resolve(request.to_version, cache=cache)
    for tree in (old_tree, new_tree):
        print(tree.summary(), file=sys.stderr)
    old, new = load_surface(old_tree, cache), load_surface(new_tree, cache)
    corpora = [tree_corpus(old_tree, new_tree)] + [folder_corpus(o, n, old_tree.provided, new_tree.provided)
                                                   for o, n in folders]  # fmt: skip
    result = mine(old_tree, new_tree, old, new, corpora, engine_check=request.engine_check)
    counts = result.counts()
    comments = [f"MINED rules for llama.cpp {request.from_version} → {request.to_version} (`migrate rules mine`), from "
                f"{old_tree.provided} → {new_tree.provided}: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
                "Every rule cites the pairs it was mined from (provenance). Review before use: docs/rules-mining.md."]
    name = f"{request.from_version}-{request.to_version}.yaml"
    out = Path(request.out) if request.out else cache_root(cache) / "rules-mined" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_file(result, comments), encoding="utf-8")
    mined = load_rules(out)  # must load: a schema error here is a bug in the miner
    for line in pairs_summary(result):
        print(line, file=sys.stderr)
    print("mined: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    try:
        hand = find_rules(request.from_version, request.to_version)
    except RuleError:
        hand = None
        print(f"precision: skipped (no hand-written rules file for {request.from_version} → {request.to_version})",
              file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mine-compare-") as tmp:
        if hand is not None:
            _report_precision(out, hand, old_tree, Path(tmp))
        for root in compare:
            if hand is None:
                print(f"compare {root}: skipped (no hand-written rules for this step)", file=sys.stderr)
                continue
            _report_comparison(root, hand, mined, old_tree)
    print(out)
    return RulesExit.OK


def _report_precision(out: Path, hand: RuleSet, tree: SourceTree, folder: Path) -> None:
    from migrate.mine.compare import Verdict, confirm

    verdicts = confirm(out, hand, tree, folder)
    for verdict in verdicts:
        print(f"  {verdict.rule}: {verdict.verdict} ({verdict.detail})", file=sys.stderr)
    rewriting = [v for v in verdicts if v.verdict != Verdict.PROPOSAL]
    confirmed = sum(1 for v in rewriting if v.verdict == Verdict.CONFIRMED)
    at_default = [v.rule for v in rewriting if v.verdict == Verdict.CONFIRMED_AT_DEFAULT]
    print(f"precision: {confirmed} of {len(rewriting)} rewriting mined rule(s) confirmed by the hand rules"
          + (f", {len(at_default)} more at the mined default only ({', '.join(at_default)})" if at_default else "")
          + f"; {len(verdicts) - len(rewriting)} manual proposal(s); to review: "
          + (", ".join(v.rule for v in rewriting if v.verdict != Verdict.CONFIRMED) or "none"),
          file=sys.stderr)  # fmt: skip


def _report_comparison(root: Path, hand: RuleSet, mined: RuleSet, tree: SourceTree) -> None:
    from migrate.mine.compare import compare_on

    for comparison in compare_on(root, hand, mined, tree):
        print(f"compare {comparison.line()}", file=sys.stderr)
        for label, rows in (("hand only", comparison.hand_only), ("mined only", comparison.mined_only)):
            for file, line, text in sorted(rows):
                print(f"  {label}: {file}:{line}: {text}", file=sys.stderr)
