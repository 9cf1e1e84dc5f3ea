"""Stage "build": compile a consumer's shim against a llama.cpp tree into one shared library.

llama.cpp's own libraries (llama, common, ggml*) are built once per (commit, options) into the cache as
static, position-independent archives and linked into the shim, as a consumer such as an R package ships
them. Rebuilding a changed shim then costs one compile and one link, not a cold llama.cpp build.
The shim is a CMake target linked to llama.cpp's own `llama` and `common` targets (imported from the cached build,
see migrate/llama_targets.py), so its include directories, definitions and link dependencies are llama.cpp's, as in
the consumer's own build; the consumer's `[build]` settings (migrate/build_settings.py) add to them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from migrate import compiled, cuda
from migrate import llama_targets as target_export
from migrate.build_settings import BuildSettings
from migrate.paths import cache_root
from migrate.prebuilt import Prebuilt
from migrate.sources import SourceTree
from migrate.tree import consumer_files
from verify.errors import ToolError
from verify.manifest import BuildManifest, read_manifest
from verify.sanitize import SANITIZERS

# Flags that keep the llama.cpp build to the libraries a shim links; static + PIC so they link into a .so.
BASE_CMAKE_ARGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)
LLAMA_TARGETS = ("llama", "common")
SOURCE_SUFFIXES = {".c", ".cc", ".cpp", ".cxx"}
INCLUDE_LLAMA = re.compile(r'^\s*#\s*include\s*[<"](?:[^">]*/)?llama\.h[">]', re.MULTILINE)
COMPILER_ERROR = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$")
LINKER_ERROR = re.compile(r"^(?P<file>[^\s:][^:]*):(?:\(.*?\)|[^:]*): (?P<msg>undefined reference to .*)$")


class BuildError(ToolError):
    """Misuse the caller must fix (no shim found, no toolchain); a failing compile is a BuildResult instead."""


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "cpu"  # "cpu" or "cuda"
    cuda_arch: str | None = None  # CMake's CMAKE_CUDA_ARCHITECTURES; None: the visible GPU's
    cmake_args: tuple[str, ...] = ()
    jobs: int | None = None
    # the shim's llama.cpp calls wrapped by verify/tracer/tracer.c (verify --trace): a separate shim build, -g;
    # llama.cpp's own libraries are the same (not part of key())
    traced: bool = False
    # sanitizers the shim's own sources are compiled with (verify --sanitize address,undefined): a separate shim build,
    # -g; llama.cpp's libraries are the same (not part of key())
    sanitize: tuple[str, ...] = ()
    # what the consumer's build adds to the shim ([build] and the matching options); not part of key(): llama.cpp's
    # libraries do not depend on it
    settings: BuildSettings = field(default_factory=BuildSettings)
    # where llama.cpp's libraries come from: "source" (compiled here), "prebuilt" (a registry package's shared
    # libraries of the same release, migrate/prebuilt.py) or "auto" (prebuilt where there is one); not part of key()
    llama_build: str = "source"

    def toolkit(self) -> cuda.CudaToolkit | None:
        """The CUDA toolkit for this build (None for CPU); missing nvcc or cuBLAS is a BuildError naming what to get."""
        if self.backend != "cuda":
            return None
        try:
            return cuda.find_toolkit()
        except cuda.CudaError as exc:
            raise BuildError(str(exc)) from exc

    def arch(self) -> str:
        """The named architecture, else the visible GPU's; a CUDA build for an unknown device is refused."""
        arch = self.cuda_arch or cuda.detect_arch()
        if not arch:
            raise BuildError("--cuda-arch not given and no GPU to detect it from (nvidia-smi): name the "
                             "architecture, e.g. --cuda-arch 90 for H100/H200, 80 for A100, 89 for L4/RTX 40xx")
        return arch

    def llama_cmake_args(self) -> list[str]:
        args = list(BASE_CMAKE_ARGS)
        toolkit = self.toolkit()
        if toolkit is not None:
            args.extend(cuda.llama_cmake_args(toolkit, self.arch()))
        elif self.backend != "cpu":
            raise BuildError(f"unknown backend {self.backend!r}: use 'cpu' or 'cuda'")
        if shutil.which("ccache"):
            args.append("-DGGML_CCACHE=ON")
        args.extend(self.cmake_args)
        return args

    def key(self) -> str:
        """Cache key part: backend (and CUDA arch) plus a digest of every flag that shapes the objects."""
        flags = [a for a in self.llama_cmake_args() if a != "-DGGML_CCACHE=ON"]
        digest = hashlib.sha256(json.dumps(flags).encode()).hexdigest()[:10]
        if self.backend == "cuda":
            return f"cuda-sm{re.sub(r'[^0-9A-Za-z]+', '_', self.arch())}-{digest}"
        return f"{self.backend}-{digest}"


@dataclass
class LlamaLibs:
    """llama.cpp's static libraries for one (commit, options), built in the cache."""

    tree: Path
    build_dir: Path
    archives: list[Path]
    # llama.cpp's targets as IMPORTED targets with their usage requirements (llama_targets.EXPORT_FILE); None for
    # libraries built elsewhere, which then give their include directories themselves
    targets_file: Path | None
    include_dirs: list[Path]
    backend: str
    reused: bool
    seconds: float
    objects_rebuilt: int
    toolkit: cuda.CudaToolkit | None = None  # how the shim links CUDA, for backend "cuda"
    prebuilt: Prebuilt | None = None  # llama and ggml are a package's shared libraries; `archives` is common only


@dataclass
class CompilerMessage:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class BuildResult:
    ok: bool
    library: str | None
    sources: list[str]
    llama: dict[str, str | None]
    backend: str
    seconds: float
    llama_seconds: float
    llama_reused: bool
    llama_objects_rebuilt: int
    shim_seconds: float
    log: str
    errors: list[CompilerMessage] = field(default_factory=list)
    stage: str = "shim"  # where it failed: "llama" or "shim"
    cuda: dict[str, object] | None = None  # toolkit, cuBLAS origin and linkage, driver, for backend "cuda"
    log_path: str | None = None  # the full log, kept beside the build
    llama_build: str = "source"  # where llama.cpp's libraries came from: source | prebuilt
    prebuilt: dict[str, object] | None = None  # which package, version, libraries (Prebuilt.describe)
    # the shim's library was served from the store of compiled shims (migrate/compiled.py): its key; else why it
    # was compiled although it might have been served ("" when it was simply not stored yet)
    shim_reused: str | None = None
    shim_not_reusable: str = ""

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["errors"] = [str(e) for e in self.errors]
        return data


# --- finding the shim -------------------------------------------------------------------------------------


def find_shim_sources(src: Path) -> list[Path]:
    """C/C++ files under SRC that include llama.h, outside any llama.cpp tree, build folder or backup."""
    if not src.exists():
        raise BuildError(f"{src}: no such file or directory")
    if src.is_file():
        return [src.resolve()]
    found = [
        path
        for path in consumer_files(src, SOURCE_SUFFIXES)
        if INCLUDE_LLAMA.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    if not found:
        raise BuildError(f"{src}: no C/C++ file that includes llama.h (outside llama.cpp trees and build folders)")
    return found


# --- llama.cpp libraries ------------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds of one cache entry across processes (CI and a developer may share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path | None, log: list[str]) -> int:
    log.append("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    log.append(proc.stdout)
    return proc.returncode


def _jobs(options: BuildOptions) -> str:
    return str(options.jobs or os.cpu_count() or 2)


def _count_compiled(ninja_output: str) -> int:
    return len(re.findall(r"^\[\d+/\d+\] Building (?:C|CXX|CUDA) object", ninja_output, re.MULTILINE))


def llama_build_dir(tree: SourceTree, options: BuildOptions, cache: Path | None = None) -> Path:
    return cache_root(cache) / "build" / f"{tree.provided}-{tree.commit[:12]}-{options.key()}"


def llama_targets(root: Path) -> tuple[str, ...]:
    """LLAMA_TARGETS as the tree names them: common/ became `llama-common` (+ `llama-common-base`) by b10361."""
    common = root / "common" / "CMakeLists.txt"
    text = common.read_text(encoding="utf-8", errors="replace") if common.is_file() else ""
    if re.search(r"set\(TARGET\s+llama-common\)", text):
        return tuple("llama-common" if t == "common" else t for t in LLAMA_TARGETS)
    return LLAMA_TARGETS


def build_llama(tree: SourceTree, options: BuildOptions, cache: Path | None = None) -> tuple[LlamaLibs | None, str]:
    """Configure (once) and bring llama.cpp's libraries up to date; returns (libs or None on failure, log)."""
    build_dir = llama_build_dir(tree, options, cache)
    log: list[str] = []
    started = time.monotonic()
    with _locked(build_dir.with_suffix(".lock")):
        stamp = build_dir / "llama-migrate-complete.json"
        reused = stamp.is_file()
        targets = llama_targets(tree.path)
        # a cache entry configured before the targets were exported is configured again with the export only: the
        # same compile commands, so only what the configure generates is compiled again (migrate/llama_targets.py)
        if not (build_dir / "build.ninja").is_file() or target_export.needs_export(build_dir, targets):
            cmd = ["cmake", "-S", str(tree.path), "-B", str(build_dir), "-G", "Ninja", *options.llama_cmake_args(),
                   *target_export.export_args(build_dir, targets)]  # fmt: skip
            if _run(cmd, None, log) != 0:
                return None, "\n".join(log)
        before = len(log)
        if _run(["cmake", "--build", str(build_dir), "-j", _jobs(options), "--target", *targets], None, log) != 0:
            return None, "\n".join(log)
        rebuilt = _count_compiled("\n".join(log[before:]))
        if not (build_dir / target_export.EXPORT_FILE).is_file():
            log.append(f"{build_dir}: llama.cpp's configure wrote no {target_export.EXPORT_FILE} (CMake 3.19 or newer "
                       "runs the export): the shim cannot take llama.cpp's targets")  # fmt: skip
            return None, "\n".join(log)
        archives = sorted(p for p in build_dir.rglob("*.a") if "CMakeFiles" not in p.parts)
        stamp.write_text(json.dumps({"commit": tree.commit, "options": options.llama_cmake_args()}, indent=1))
    libs = LlamaLibs(
        tree=tree.path,
        build_dir=build_dir,
        archives=archives,
        targets_file=build_dir / target_export.EXPORT_FILE,
        include_dirs=[],  # from targets_file
        backend=options.backend,
        reused=reused,
        seconds=time.monotonic() - started,
        objects_rebuilt=rebuilt,
        toolkit=options.toolkit(),
    )
    return libs, "\n".join(log)


# --- the shim ------------------------------------------------------------------------------------------------

SHIM_CMAKE = """\
cmake_minimum_required(VERSION 3.14)
project(llama_migrate_shim C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
# the environment's CFLAGS / CXXFLAGS when the build ran, written here so that a change configures again
set(CMAKE_C_FLAGS {cflags})
set(CMAKE_CXX_FLAGS {cxxflags})
{packages}
# llama.cpp's own targets with their usage requirements, built in the cache (migrate/llama_targets.py)
include("{targets_file}")
add_library(shim SHARED {sources})
# C++ link even for a plain-C shim (libllama is C++); no undefined symbols left for load time, and a C call
# of a function the target llama.cpp no longer declares is an error, not gcc's implicit-declaration warning
set_target_properties(shim PROPERTIES OUTPUT_NAME "{name}" LINKER_LANGUAGE CXX)
target_compile_options(shim PRIVATE $<$<COMPILE_LANGUAGE:C>:-Werror=implicit-function-declaration>)
target_link_options(shim PRIVATE -Wl,--no-undefined)
# the consumer's include directories (its sources' folders, then [build] include_dirs) before llama.cpp's
target_include_directories(shim PRIVATE {includes})
# llama.cpp internals (src/: llama-vocab.h, unicode.h, ...) of this version, then the tree's root (an include spelled
# from it, "common/chat.h", as shims built before the targets were used found it), after every other directory
target_compile_options(shim PRIVATE "-idirafter{internals}" "-idirafter{tree}")
target_compile_definitions(shim PRIVATE {defines})
{flags}
# libllama whole, so every llama_* entry point is exported for the harness to observe state with;
# the rest as a group because ggml's archives reference each other.
target_link_libraries(shim PRIVATE
  -Wl,--whole-archive "{llama}" -Wl,--no-whole-archive
  -Wl,--start-group {archives} -Wl,--end-group
  {link_libraries}
  {targets}
  Threads::Threads ${{CMAKE_DL_LIBS}} m)
if(OpenMP_CXX_FOUND)
  target_link_libraries(shim PRIVATE OpenMP::OpenMP_CXX)
endif()
{cuda}
{traced}
{sanitize}
"""

# A traced shim (`migrate build --traced`): the tracer compiled against the tree's own llama.h, every llama.cpp call
# it knows wrapped at link time (GNU ld --wrap: only references from the shim's and common's objects; the harness
# binds the real functions through the dynamic symbol table), and debug info to resolve callers to file:line. Which
# calls are wrapped is data (verify/data/releases.yaml): build_shim writes their wrappers to tracer_wraps.h beside this
# CMakeLists.txt (only when they change, so that ninja recompiles the tracer then and only then).
SHIM_TRACED_CMAKE = """\
target_sources(shim PRIVATE "{tracer}")
set_source_files_properties("{tracer}" PROPERTIES COMPILE_DEFINITIONS "{tracer_defines}"
                            INCLUDE_DIRECTORIES "${{CMAKE_CURRENT_SOURCE_DIR}}")
# -g: callers resolve to file:line; no sibling calls: a call in tail position keeps its own return address
target_compile_options(shim PRIVATE -g -fno-optimize-sibling-calls)
target_link_options(shim PRIVATE {wraps})
"""

# A sanitized shim (`migrate build --sanitize address,undefined`): the consumer's sources compiled and the shim linked
# with the sanitizers (the runtime libraries become the shim's dependencies; verify preloads them, verify/sanitize.py);
# frame pointers and debug info so that a report resolves to the consumer's file:line. llama.cpp's archives are linked
# as they were built: a report inside them is told apart by its frames.
SHIM_SANITIZE_CMAKE = """\
target_compile_options(shim PRIVATE {flags} -fno-omit-frame-pointer -g)
target_link_options(shim PRIVATE {flags})
"""


def sanitize_flag(kinds: tuple[str, ...]) -> str:
    """`-fsanitize=address,undefined` for the kinds asked for (an unknown kind is the caller's BuildError)."""
    unknown = [k for k in kinds if k not in SANITIZERS]
    if unknown:
        raise BuildError(f"--sanitize {','.join(kinds)}: unknown sanitizer(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SANITIZERS)}")  # fmt: skip
    return f"-fsanitize={','.join(kinds)}"


def _shim_sanitize(kinds: tuple[str, ...]) -> str:
    if not kinds:
        return ""
    flag = sanitize_flag(kinds)
    return SHIM_SANITIZE_CMAKE.format(flags=flag)


def _shim_cuda(libs: LlamaLibs) -> str:
    if libs.backend != "cuda":
        return ""
    if libs.toolkit is None:
        raise BuildError(f"{libs.build_dir}: CUDA libraries without a CUDA toolkit to link them with")
    return cuda.shim_cmake(libs.toolkit)


def _cmake_list(paths: list[Path] | list[str]) -> str:
    return " ".join(f'"{p}"' for p in paths)


def shim_build_dir(sources: list[Path], libs: LlamaLibs, cache: Path | None, traced: bool = False,
                   sanitize: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A folder per (sources, llama.cpp build), and per variant: a traced or sanitized shim never replaces the plain
    one (each keeps its own objects, and its own library beside its own manifest)."""
    digest = hashlib.sha256(json.dumps([str(s) for s in sources] + [str(libs.build_dir)]).encode()).hexdigest()[:12]
    variant = ("-traced" if traced else "") + (f"-san-{'-'.join(sanitize)}" if sanitize else "")
    return cache_root(cache) / "shim" / f"{libs.build_dir.name}-{digest}{variant}"


def _write_tracer_wraps(project: Path) -> None:
    """The traced shim's wrappers (verify/trace.py tracer_wraps_header), rewritten only when they changed."""
    from verify.trace import TRACER_WRAPS, tracer_wraps_header

    header, text = project / TRACER_WRAPS, tracer_wraps_header()
    if not header.is_file() or header.read_text() != text:
        header.write_text(text)


def _shim_traced(libs: LlamaLibs) -> str:
    from verify.trace import TRACER_SOURCE, tracer_config

    config = tracer_config(libs.tree / "include" / "llama.h")
    return SHIM_TRACED_CMAKE.format(tracer=TRACER_SOURCE, tracer_defines=";".join(config.defines),
                                    wraps=" ".join(config.link_flags()))  # fmt: skip


SOURCES_RECORD = "sources.json"


def _recorded_sources(record: Path) -> list[str] | None:
    """The sources a shim folder was built from; None when there is no record or it cannot be read (another run
    writing it, seen here as an empty file): such a folder is kept."""
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def _write_record(record: Path, sources: list[Path]) -> None:
    """Written whole, then renamed: a concurrent run's prune never reads it half-written."""
    tmp = record.with_name(f"{record.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps([str(s) for s in sources]))
    tmp.replace(record)


def prune_stale_shims(cache: Path | None = None) -> list[Path]:
    """Remove shim build folders whose sources are all gone (temporary copies: tests, `migrate run`), so the cache
    does not grow by a shim build per copy; folders whose sources still exist are kept and reused."""
    removed = []
    for folder in sorted((cache_root(cache) / "shim").glob("*/")):
        sources = _recorded_sources(folder / SOURCES_RECORD)
        if sources is not None and not any(Path(s).exists() for s in sources):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def parse_errors(log: str, limit: int = 50) -> list[CompilerMessage]:
    """First compiler/linker errors in a build log as file:line: message."""
    errors: list[CompilerMessage] = []
    seen: set[tuple[str, int, str]] = set()
    for raw in log.splitlines():
        line = raw.rstrip()
        match = COMPILER_ERROR.match(line)
        if match:
            item = (match["file"], int(match["line"]), match["msg"])
        else:
            match = LINKER_ERROR.match(line)
            if not match:
                continue
            item = (match["file"], 0, match["msg"])
        if item not in seen:
            seen.add(item)
            errors.append(CompilerMessage(*item))
        if len(errors) >= limit:
            break
    return errors


def _cmake_quoted(text: str) -> str:
    """`text` as one quoted CMake argument (backslash, quote and `$` escaped: a flag is never expanded)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _shim_packages(libs: LlamaLibs) -> str:
    """find_package() of every package whose targets llama.cpp's targets name (Threads, OpenMP, OpenSSL, ...)."""
    lines = ["find_package(Threads REQUIRED)", "find_package(OpenMP)"]
    if libs.targets_file is not None:
        lines += [f"find_package({name} REQUIRED)" for name in target_export.required_packages(libs.targets_file)
                  if name not in ("Threads", "OpenMP")]  # fmt: skip
    return "\n".join(lines)


def _shim_flags(settings: BuildSettings, sources: list[Path]) -> str:
    """[build] flags on the consumer's own sources (not the tracer's) as one string: COMPILE_FLAGS keeps their order
    and repeats (`-include a -include b`), where target options would be de-duplicated by CMake."""
    if not settings.flags:
        return ""
    return (f"set_source_files_properties({_cmake_list(sources)} PROPERTIES COMPILE_FLAGS "
            f"{_cmake_quoted(shlex.join(settings.flags))})")  # fmt: skip


def shim_cmake_text(sources: list[Path], libs: LlamaLibs, name: str, settings: BuildSettings, traced: bool,
                    sanitize: tuple[str, ...] = ()) -> str:  # fmt: skip
    """The shim's CMakeLists.txt: the consumer's sources as a target linked to llama.cpp's targets (SHIM_CMAKE)."""
    llama, others = _link_inputs(libs)
    includes = sorted({s.parent for s in sources}) + [Path(d) for d in settings.include_dirs] + libs.include_dirs
    targets = target_export.imported_targets(libs.targets_file) if libs.targets_file else []
    return SHIM_CMAKE.format(
        cflags=_cmake_quoted(settings.environment.get("CFLAGS", "")),
        cxxflags=_cmake_quoted(settings.environment.get("CXXFLAGS", "")),
        packages=_shim_packages(libs),
        targets_file=libs.targets_file or "",
        sources=_cmake_list(sources),
        name=name,
        includes=_cmake_list(includes),
        internals=libs.tree / "src",
        tree=libs.tree,
        defines=" ".join(_cmake_quoted(d) for d in ("LLAMA_MIGRATE_BUILD=1", *settings.defines)),
        flags=_shim_flags(settings, sources),
        llama=llama,
        archives=_cmake_list(others),
        link_libraries=" ".join(_cmake_quoted(x) for x in settings.link_libraries),
        targets=" ".join(t for t in targets if t.rpartition("::")[2] in ("llama", "common", "llama-common")),
        cuda=_shim_cuda(libs),
        traced=_shim_traced(libs) if traced else "",
        sanitize=_shim_sanitize(sanitize),
    )


def _link_inputs(libs: LlamaLibs) -> tuple[Path, list[Path]]:
    """libllama (linked whole) and the rest: the cached archives; or, prebuilt, the package's shared libraries (whole
    archive does nothing to them, their RUNPATH entry comes from CMake) after the archives of common."""
    if libs.prebuilt is not None:
        linked = libs.prebuilt.linked()
        return linked[0], [*libs.archives, *linked[1:]]
    llama = next((a for a in libs.archives if a.name == "libllama.a"), None)
    if llama is None:
        raise BuildError(f"{libs.build_dir}: libllama.a missing; remove the folder to rebuild it")
    return llama, [a for a in libs.archives if a != llama]


def build_shim(
    sources: list[Path],
    libs: LlamaLibs,
    name: str = "shim",
    settings: BuildSettings | None = None,
    cache: Path | None = None,
    traced: bool = False,
    sanitize: tuple[str, ...] = (),
    consumer_root: Path | None = None,
) -> ShimBuild:
    """Compile and link the shim (`traced`: with the call tracer, see SHIM_TRACED_CMAKE; `sanitize`: with these
    sanitizers, see SHIM_SANITIZE_CMAKE; `settings`: what the consumer's build adds). A plain shim whose inputs
    (under `consumer_root`) were compiled before, in another copy's folder, is served into a new folder from the
    store of compiled shims (migrate/compiled.py) instead."""
    started = time.monotonic()
    prune_stale_shims(cache)
    build_dir = shim_build_dir(sources, libs, cache, traced, sanitize)
    build_dir.mkdir(parents=True, exist_ok=True)
    _write_record(build_dir / SOURCES_RECORD, sources)
    settings = settings or BuildSettings()
    text = shim_cmake_text(sources, libs, name, settings, traced, sanitize)
    library = build_dir / "out" / f"lib{name}.so"
    if traced or sanitize:
        key = compiled.CompiledKey(None, "a traced or sanitized shim names its sources' paths")
    else:
        key = compiled.compiled_key(text, consumer_root, settings, sources, _linked_files(libs), name)
    # served only into a folder never configured (a new copy's): one built here before is brought up to date by
    # its own ninja (nothing to do when nothing changed), and its library is not rewritten under a reader
    fresh = not (build_dir / "out" / "build.ninja").is_file()
    if key.key and fresh and compiled.lookup(cache, key.key, library):
        log = f"shim: {library.name} served from the compiled shims (identical inputs, key {key.key})"
        return ShimBuild(library, log, time.monotonic() - started, key.key, "")
    built, log = _compile_shim(build_dir, text, traced, name)
    if built is not None and key.key:
        compiled.store(cache, key.key, built)
    return ShimBuild(built, log, time.monotonic() - started, None, key.reason)


@dataclass(frozen=True)
class ShimBuild:
    """What build_shim made: the library (None: the compile or link failed), the log, the seconds, and the store's
    key when the library was served from it (else why it could not be, '' when it could but was not stored yet)."""

    library: Path | None
    log: str
    seconds: float
    reused: str | None = None
    not_reusable: str = ""


def _linked_files(libs: LlamaLibs) -> list[Path]:
    """llama.cpp's libraries the shim links, and its export file: their identity is part of the compiled key."""
    files = [*libs.archives, *(libs.prebuilt.linked() if libs.prebuilt else [])]
    return files + ([libs.targets_file] if libs.targets_file else [])


def _compile_shim(build_dir: Path, text: str, traced: bool, name: str) -> tuple[Path | None, str]:
    project = build_dir / "project"
    project.mkdir(exist_ok=True)
    cmake_file = project / "CMakeLists.txt"
    if not cmake_file.is_file() or cmake_file.read_text() != text:
        cmake_file.write_text(text)
    if traced:
        _write_tracer_wraps(project)
    log: list[str] = []
    out = build_dir / "out"
    if not (out / "build.ninja").is_file() or cmake_file.stat().st_mtime > (out / "build.ninja").stat().st_mtime:
        cmd = ["cmake", "-S", str(project), "-B", str(out), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"]
        if _run(cmd, None, log) != 0:
            return None, "\n".join(log)
    if _run(["cmake", "--build", str(out), "-j", "2"], None, log) != 0:
        return None, "\n".join(log)
    library = out / f"lib{name}.so"
    return library, "\n".join(log)


def consumer_build_settings(src: Path) -> BuildSettings:
    """The `[build]` table of the consumer's config (llama-migrate.toml or pyproject.toml in `src`); an invalid config
    is a ToolError naming the key."""
    from migrate.config import load_config

    return load_config(src).build if src.exists() else BuildSettings()


def _extra_sources(settings: BuildSettings, found: list[Path]) -> list[Path]:
    """[build] sources not already among the shim's; a missing one is the caller's to fix, named."""
    extra = []
    for item in settings.sources:
        path = Path(item).resolve()
        if not path.is_file():
            raise BuildError(f"build source {item}: no such file (fix [build] sources or --build-source)")
        if path not in found and path not in extra:
            extra.append(path)
    return extra


def _write_manifest(library: Path, src: Path, tree: SourceTree, options: BuildOptions, sources: list[Path],
                    header: Path | None, prebuilt: Prebuilt | None = None) -> None:  # fmt: skip
    """What verification needs to know about this library, beside it (verify/manifest.py)."""
    from verify.bindings import find_header

    if header is None:
        try:
            header = find_header(src, sources)
        except ToolError:
            header = None  # two candidates or none: verify asks for --header / `header`
    root = src if src.is_dir() else src.parent
    BuildManifest(
        library=str(library), llama_tree=str(tree.path), llama_version=tree.provided, llama_requested=tree.requested,
        sources=[str(s) for s in sources], consumer_root=str(root.resolve()),
        header=str(header) if header else None,
        options={"backend": options.backend, "cmake_args": list(options.cmake_args), "traced": options.traced,
                 "sanitize": list(options.sanitize), "llama_build": "prebuilt" if prebuilt else "source"},
        prebuilt=prebuilt.describe() if prebuilt else None,
        build=options.settings.to_json(),
    ).write()


def build(
    src: Path,
    tree: SourceTree,
    options: BuildOptions | None = None,
    sources: list[Path] | None = None,
    name: str | None = None,
    cache: Path | None = None,
    header: Path | None = None,
) -> BuildResult:
    """The whole stage: find the shim, bring llama.cpp's libraries up to date, compile and link.
    `header`: the consumer's C API header, recorded in the manifest beside the library (default: found)."""
    options = options or BuildOptions()
    # the [build] of the tree being built (a migrated copy reads its own), then the options', then the environment's
    # CFLAGS/CXXFLAGS as they are now: all given to CMake and recorded in the manifest
    settings = consumer_build_settings(src).merged(options.settings).with_environment()
    options = replace(options, settings=settings)
    started = time.monotonic()
    shim_sources = [Path(s).resolve() for s in sources] if sources else find_shim_sources(src)
    shim_sources += _extra_sources(options.settings, shim_sources)
    name = name or shim_sources[0].stem
    llama_info: dict[str, str | None] = tree.describe()
    if options.llama_build == "source":
        libs, llama_log = build_llama(tree, options, cache)
    else:  # a registry package's libraries where it has them (auto: else the source build), migrate/prebuilt.py
        from migrate.prebuilt import llama_libraries

        libs, llama_log = llama_libraries(tree, options, cache, build_llama)
    if libs is None:
        return BuildResult(
            ok=False, library=None, sources=[str(s) for s in shim_sources], llama=llama_info,
            backend=options.backend, seconds=time.monotonic() - started, llama_seconds=time.monotonic() - started,
            llama_reused=False, llama_objects_rebuilt=0, shim_seconds=0.0, log=llama_log,
            errors=parse_errors(llama_log), stage="llama",
        )  # fmt: skip
    root = src if src.is_dir() else src.parent
    shim = build_shim(shim_sources, libs, name=name, settings=options.settings, cache=cache, traced=options.traced,
                      sanitize=options.sanitize, consumer_root=root)  # fmt: skip
    library, shim_log, shim_seconds = shim.library, shim.log, shim.seconds
    if library is not None:
        _write_manifest(library, src, tree, options, shim_sources, header, libs.prebuilt)
    log = llama_log + "\n" + shim_log
    log_path = shim_build_dir(shim_sources, libs, cache, options.traced, options.sanitize) / "build.log"
    log_path.write_text(log)
    return BuildResult(
        ok=library is not None, library=str(library) if library else None, sources=[str(s) for s in shim_sources],
        llama=llama_info, backend=options.backend, seconds=time.monotonic() - started, llama_seconds=libs.seconds,
        llama_reused=libs.reused, llama_objects_rebuilt=libs.objects_rebuilt, shim_seconds=shim_seconds, log=log,
        errors=[] if library else parse_errors(shim_log), stage="shim", log_path=str(log_path),
        cuda=libs.toolkit.describe() if libs.toolkit else None,
        llama_build="prebuilt" if libs.prebuilt else "source",
        prebuilt=libs.prebuilt.describe() if libs.prebuilt else None,
        shim_reused=shim.reused, shim_not_reusable=shim.not_reusable,
    )  # fmt: skip


def sanitized_build(library: Path, sanitize: tuple[str, ...], cache: Path | None = None) -> BuildResult:
    """`library` (a build `migrate build` made) built again with these sanitizers, from what its manifest recorded:
    the same sources, llama.cpp tree, backend and options (llama.cpp's libraries from the same cache entry), in a
    shim folder of its own. A library without a manifest is a BuildError naming what to do instead."""
    from migrate.sources import resolve

    manifest = read_manifest(library)
    if manifest is None or not manifest.sources or not manifest.llama_tree:
        raise BuildError(f"--sanitize: {library} has no build manifest to rebuild it from (built outside `migrate "
                         "build`?): build it with `migrate build SRC --llama VERSION --sanitize address,undefined` and "
                         "pass that library")  # fmt: skip
    sanitize_flag(sanitize)  # an unknown kind: the caller's error, before anything is built
    tree = resolve(manifest.llama_requested or manifest.llama_version or manifest.llama_tree, cache=cache)
    if tree.path.resolve() != Path(manifest.llama_tree).resolve():  # the manifest's own tree, wherever it came from
        tree = resolve(manifest.llama_tree, cache=cache)
    root = Path(manifest.consumer_root) if manifest.consumer_root else Path(manifest.sources[0]).parent
    recorded = manifest.options
    options = BuildOptions(backend=recorded.get("backend", "cpu"), cmake_args=tuple(recorded.get("cmake_args", ())),
                           settings=_recorded_settings(manifest.build, root),
                           llama_build=recorded.get("llama_build", "source"), sanitize=sanitize)  # fmt: skip
    header = Path(manifest.header) if manifest.header else None
    return build(root, tree, options, sources=[Path(s) for s in manifest.sources], cache=cache, header=header)


def _recorded_settings(recorded: dict[str, object], root: Path) -> BuildSettings:
    """What the command line added to the consumer's [build] when the library was built (build() reads the config
    again: its flags, which would otherwise repeat, are taken off the front of the recorded ones)."""
    values = {k: tuple(v) for k, v in recorded.items() if k != "environment" and isinstance(v, list)}
    settings = BuildSettings(**values)
    config = consumer_build_settings(root)
    if settings.flags[: len(config.flags)] == config.flags:
        settings = replace(settings, flags=settings.flags[len(config.flags) :])
    return settings
