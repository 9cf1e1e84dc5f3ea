"""What a plan is made by, for the plan cache's key: the source of every module the plan can run and the data it reads.

The modules are those of the rewrite package (migrate/rewrite, its handlers included) and every module of this
checkout they reach by imports (imports inside functions and under TYPE_CHECKING too: reaching a module is enough),
not a list kept by hand: a new handler, or any module a handler starts to import, is covered as soon as it is there.
The data are the shipped rules files and templates. A file is named by its path relative to the checkout, so an
identical copy of the checkout gives the same key (tests/test_plan_cache_key.py edits a copy).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from migrate.paths import data_dir

PACKAGE = Path(__file__).resolve().parent.parent  # the migrate package
DATA = ("rules", "templates")
IMPORT = re.compile(rb"^[ \t]*import[ \t]+([^\n]*)", re.MULTILINE)
FROM = re.compile(rb"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)

# a module's file -> ((mtime, size), the modules it imports): a file is parsed again only when it changed
_IMPORTS: dict[Path, tuple[tuple[int, int], frozenset[str]]] = {}


def module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` in the checkout at `root` (None: a module from elsewhere, stdlib or installed)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names(clause: bytes) -> list[str]:
    """`a, b as c` or `(a,\n b,  # note\n)` -> ["a", "b"]."""
    text = re.sub(rb"#[^\n]*", b"", clause).strip(b"()")
    return [part.split()[0].decode() for part in text.split(b",") if part.split()]


def _imported(name: str, file: Path) -> frozenset[str]:
    """Every module `file` (module `name`) imports, absolute, with the names `from x import y` may mean (x.y). Read
    from the text (an import statement written anywhere, even in a string, only adds a module to the key)."""
    stat = file.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    known = _IMPORTS.get(file)
    if known is not None and known[0] == stamp:
        return known[1]
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    data = file.read_bytes()
    found: set[str] = set()
    for clause in IMPORT.findall(data):
        found.update(_names(clause))
    for dots, module, clause in FROM.findall(data):
        if dots:  # relative: from the package this module is in
            parts = package.split(".")
            anchor = ".".join(parts[: len(parts) - len(dots) + 1])
            base = f"{anchor}.{module.decode()}" if module else anchor
        else:
            base = module.decode()
        found.add(base)
        found.update(f"{base}.{alias}" for alias in _names(clause))
    _IMPORTS[file] = (stamp, frozenset(found))
    return _IMPORTS[file][1]


def code_files(package: Path = PACKAGE, start: str = "rewrite") -> list[Path]:
    """The files of every module of the sub-package `start` (default the rewrite package: the engine and all it may
    call on) and of every module of the checkout they reach by imports, with the packages' __init__ files (they run
    when a module in them is imported)."""
    root = package.parent
    seen: dict[str, Path] = {}
    stack = [".".join(p.relative_to(root).with_suffix("").parts) for p in sorted((package / start).rglob("*.py"))]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        file = module_file(root, name)
        if file is None:
            continue
        seen[name] = file
        parents = [name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)]
        stack += parents + sorted(_imported(name, file))
    return sorted(set(seen.values()))


def files_digest(paths: list[Path], root: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """Each file's name relative to `root` and the digest of its bytes, in order, into `digest` (a new sha256)."""
    digest = digest or hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest


def data_files() -> list[Path]:
    """The shipped data a plan reads: the rules files and the templates."""
    return sorted(p for name in DATA for p in data_dir(name).rglob("*") if p.is_file())


def plan_inputs_digest(package: Path = PACKAGE) -> str:
    """Digest of the plan's code and data, each file under its name relative to the checkout."""
    digest = files_digest(code_files(package), package.parent)
    for path in data_files():
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
