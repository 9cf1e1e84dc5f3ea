"""Write a plan: all files or none, originals backed up, optionally on a new git branch with a commit.

Order of work, so that a failure leaves the consumer's tree as it was: refuse early (uncommitted changes,
syntactic edits not allowed), compute every new file in memory (overlapping edits fail here), write each to a
temporary file beside its target, back the originals up, then rename the temporaries over the originals
(atomic per file); if a rename fails, the files already replaced are restored from the backups.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from migrate.paths import cache_root
from migrate.rewrite.edits import Edit
from migrate.rewrite.plan import Plan, ReadMode
from verify.errors import ToolError

if TYPE_CHECKING:
    from git import Diff, Repo  # only for annotations: GitPython is imported lazily (it is slow to import)

TEMP_SUFFIX = ".llama-migrate.tmp"


class ApplyRefused(ToolError):
    """Nothing was written; the message says why and what to do."""


@dataclass
class ApplyResult:
    written: list[Path] = field(default_factory=list)
    backup_dir: Path | None = None
    branch: str | None = None
    commit: str | None = None


def _repo_for(root: Path) -> Repo | None:
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        return Repo(root, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        return None


def uncommitted(plan: Plan, targets: list[Path]) -> list[str]:
    """Files under the consumer root with uncommitted changes, and targets git does not track."""
    repo = _repo_for(plan.root)
    if repo is None:
        return []
    work = Path(repo.working_tree_dir or plan.root).resolve()
    root = plan.root.resolve()
    changed = _paths(repo.index.diff(None))
    if repo.head.is_valid():
        changed |= _paths(repo.index.diff("HEAD"))
    dirty = sorted(p for p in changed if (work / p).resolve().is_relative_to(root))
    tracked = set(repo.git.ls_files(str(root)).splitlines()) if targets else set()
    for target in targets:
        relative = str(target.resolve().relative_to(work))
        if relative not in tracked:
            dirty.append(f"{relative} (untracked)")
    return dirty


def _paths(diffs: Iterable[Diff]) -> set[str]:
    """The files a git diff names: each one's path on the a side, or on the b side for a file only there."""
    return {path for item in diffs if (path := item.a_path or item.b_path) is not None}


def apply_plan(plan: Plan, force: bool = False, branch: str | None = None, allow_syntactic: bool = False,
               cache: str | Path | None = None, backup_root: Path | None = None) -> ApplyResult:  # fmt: skip
    """Write the plan's files (see the module docstring); originals go under backup_root (default
    <cache>/backups)."""
    contents = plan.new_contents()
    if not contents:
        return ApplyResult()
    if plan.syntactic_edits and not allow_syntactic:
        raise ApplyRefused(syntactic_refusal(plan))
    targets = sorted(contents)
    changed_since = [plan.relative(p) for p in targets if p.read_bytes() != plan.files[p].data]
    if changed_since:
        raise ApplyRefused(f"changed since the plan was made: {', '.join(changed_since)}; plan again")
    if not force:
        dirty = uncommitted(plan, targets)
        if dirty:
            raise ApplyRefused(
                "uncommitted changes in the tree (commit or stash them, or pass --force): " + ", ".join(dirty[:10])
            )
    repo = _repo_for(plan.root) if branch else None
    if branch and repo is None:
        raise ApplyRefused(f"--branch needs a git repository; {plan.root} is not in one")
    previous = _start_branch(repo, branch) if repo is not None and branch else None
    try:
        result = _write_all(plan, contents, backup_root or cache_root(cache) / "backups")
    except Exception:
        if previous is not None and repo is not None:
            repo.git.checkout(previous)
            repo.git.branch("-D", branch)
        raise
    if repo is not None and branch:
        repo.index.add([str(path) for path in result.written])
        rules = ", ".join(sorted({e.rule for e in plan.edits}))
        message = f"Migrate llama.cpp {plan.from_version} → {plan.to_version} (llama-migrate)\n\nRules: {rules}\n"
        result.commit = repo.index.commit(message).hexsha
        result.branch = branch
    return result


def syntactic_refusal(plan: Plan) -> str:
    """Why edits were matched by name only, case by case, each with its own remedy: a file libclang could not parse
    (an include path is missing), a name the --from tree does not declare (no include path helps: the code is
    probably newer than --from), a macro body never expanded here."""
    unparsed = {r.path: r.reason for r in plan.file_reports if r.mode == ReadMode.TREE_SITTER}
    cases: dict[str, list[Edit]] = {"unparsed": [], "undeclared": [], "macro": []}
    for edit in plan.syntactic_edits:
        if plan.relative(edit.file) in unparsed:
            cases["unparsed"].append(edit)
        elif edit.undeclared:
            cases["undeclared"].append(edit)
        else:
            cases["macro"].append(edit)
    parts = []
    if cases["unparsed"]:
        files = sorted({plan.relative(e.file) for e in cases["unparsed"]})
        why = unparsed[files[0]]
        parts.append(f"{len(cases['unparsed'])} in {', '.join(files)}, which libclang could not parse ({why}): fix "
                     "the include paths (a compile_commands.json in the tree; plan/apply also take --flag=-I...) "
                     "and plan again")  # fmt: skip
    if cases["undeclared"]:
        names = sorted({_called_name(e) for e in cases["undeclared"]})
        where = ", ".join(sorted({f"{plan.relative(e.file)}:{e.line}" for e in cases["undeclared"]})[:5])
        parts.append(f"{len(cases['undeclared'])} of {', '.join(names)} ({where}), which llama.cpp "
                     f"{plan.from_version} does not declare: name-only by nature, no include path changes that — "
                     "the code looks newer than --from: re-run with the --from it builds against, or check "
                     "them")  # fmt: skip
    if cases["macro"]:
        where = ", ".join(sorted({f"{plan.relative(e.file)}:{e.line}" for e in cases["macro"]})[:5])
        parts.append(f"{len(cases['macro'])} in macro bodies never expanded here ({where}): check them")
    return (f"{len(plan.syntactic_edits)} edit(s) matched by name only: " + "; ".join(parts) + ". To write them as "
            "planned: --allow-syntactic (allow_syntactic = true in llama-migrate.toml for `migrate run`)")


def _called_name(edit: Edit) -> str:
    match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", edit.before)
    return match.group(1) if match else edit.before[:40]


def _start_branch(repo: Repo, branch: str) -> str:
    if branch in [head.name for head in repo.heads]:
        raise ApplyRefused(f"branch {branch!r} exists already; choose another name")
    previous = repo.active_branch.name if not repo.head.is_detached else repo.head.commit.hexsha
    repo.git.checkout("-b", branch)
    return previous


def _write_all(plan: Plan, contents: dict[Path, bytes], backup_root: Path) -> ApplyResult:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup_dir = backup_root / f"{plan.root.name}-{stamp}-{os.getpid()}"
    temps: dict[Path, Path] = {}
    try:
        for path, data in contents.items():
            temp = path.with_name(path.name + TEMP_SUFFIX)
            temp.write_bytes(data)
            shutil.copymode(path, temp)
            temps[path] = temp
        for path in contents:
            backup = backup_dir / plan.relative(path)
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, backup)
    except BaseException as exc:  # Ctrl-C too: no file was changed, and no temporary file may stay behind
        _remove(temps.values())
        if isinstance(exc, OSError):
            raise ApplyRefused(f"could not prepare the new files ({exc}); nothing was changed") from exc
        raise
    replaced: list[Path] = []
    try:
        for path, temp in temps.items():
            os.replace(temp, path)
            replaced.append(path)
    except BaseException as exc:  # Ctrl-C too: all files or none
        for path in replaced:
            shutil.copy2(backup_dir / plan.relative(path), path)
        _remove(temps.values())
        if isinstance(exc, OSError):
            raise ApplyRefused(f"writing {path} failed ({exc}); every file was restored") from exc
        raise
    return ApplyResult(written=replaced, backup_dir=backup_dir)


def _remove(paths: Iterable[Path]) -> None:
    for path in list(paths):
        Path(path).unlink(missing_ok=True)
