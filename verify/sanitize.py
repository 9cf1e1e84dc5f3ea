"""Sanitizers in verification (`migrate verify --sanitize address,undefined`).

The consumer's shim is built with AddressSanitizer / UndefinedBehaviorSanitizer (`migrate build --sanitize`,
migrate/build.py; llama.cpp's libraries as they are). Each check then runs in its child (verify/runner.py) with the
sanitizer runtime the compiler links preloaded (an instrumented library loaded into an uninstrumented interpreter
needs its runtime first), a report file per check (`log_path`), and LeakSanitizer's suppressions for the
interpreter's own allocations. What the runtime wrote becomes typed findings (`Finding`): the kind (use after free,
buffer overflow, leak, undefined behaviour, ...), and the consumer's file:line, the first frame of the report's
stack inside the consumer's sources.

Whose a finding is: the consumer's when a frame of its stack lies in the consumer's sources (the shim's own code
made the access, or called llama.cpp with what it made it do: a batch never freed); otherwise llama.cpp's or the
interpreter's (Python's allocations it keeps until exit, cffi's types, llama.cpp's own caches), which is reported
beside the check and never fails it. A sanitizer that cannot run here (no runtime, a compiler without it) makes
every check `skipped` with the reason, never passed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify.perturb import is_perturb_preload

# the runtime each sanitizer needs, as the compiler names it (`cc -print-file-name=libasan.so`)
RUNTIME_LIBS = {"address": "libasan.so", "undefined": "libubsan.so"}
SANITIZERS = tuple(RUNTIME_LIBS)
# the exit status the runtimes use (an error that stops the process, leaks found at exit): told apart from a crash
SANITIZER_EXIT = 86
# set in a sanitized check's child: the runtime is loaded into it, and must not be preloaded into what it starts
SANITIZED_ENV = "LLAMA_MIGRATE_SANITIZED"
# a report's frames kept in a finding (the top of the stack, and the consumer's frame)
FRAMES_KEPT = 8
REPORT_LINES_KEPT = 40

HEAP_FIGURES = ("not measured: its heap figures are glibc's mallinfo2, and under AddressSanitizer the allocator is the "
                "sanitizer's; LeakSanitizer reports what the consumer does not free instead (every check, at its exit)")
# Checks whose figure the sanitizer itself would decide: not run under it, with the reason.
NOT_SANITIZED = {
    "throughput": "not measured: the shim runs instrumented (--sanitize), which costs time per call; measure "
                  "tokens/s on a plain build",
    "error_out_of_memory": "not run: AddressSanitizer's allocator ends the process on an allocation it cannot make "
                           "instead of failing it (operator new never throws std::bad_alloc under it), and a "
                           "graceful failure is what this check asks for; run it on a plain build",
    "frees_release_memory": HEAP_FIGURES,
    "failed_calls_release_memory": HEAP_FIGURES,
}  # fmt: skip

# LeakSanitizer's suppressions for the interpreter's own allocations, matched against a leak's allocation stack.
# Only allocator wrappers are named: they are callers of malloc, never callers of the consumer's code, so no leak
# made by the shim (whose stack goes through the interpreter's call frames too) can match one. What is left of the
# interpreter's and llama.cpp's leaks is told apart by its frames (`Finding.consumer`).
SUPPRESSIONS = """\
# the interpreter's allocators: objects Python keeps until exit (interned strings, types, module state)
leak:PyObject_Malloc
leak:PyObject_Calloc
leak:PyObject_Realloc
leak:PyMem_Malloc
leak:PyMem_Calloc
leak:PyMem_Realloc
leak:PyMem_RawMalloc
leak:PyMem_RawCalloc
leak:PyMem_RawRealloc
leak:_PyMem_RawStrdup
leak:_PyObject_GC_New
leak:_PyObject_GC_NewVar
leak:_PyObject_GC_Link
leak:_PyObject_New
leak:PyType_GenericAlloc
leak:_PyObject_GC_Resize
leak:PyThread_allocate_lock
leak:list_resize
# numpy's module state (the reference checks import it): its ufunc tables and string allocator
leak:PyUFunc_FromFuncAndData
leak:NpyString_new_allocator
leak:PyDataMem_UserNEW
# the dynamic loader's own records of the libraries loaded (the shim, cffi's backend)
leak:_dl_map_object
leak:_dl_new_object
leak:_dl_catch_exception
"""


class SanitizerError(Exception):
    """A sanitizer cannot run here: the reason every check is skipped with."""


class FindingKind(enum.Enum):
    """What a sanitizer reported (AddressSanitizer's error names; LeakSanitizer's leaks; UBSan's runtime errors)."""

    HEAP_USE_AFTER_FREE = "heap-use-after-free"
    HEAP_BUFFER_OVERFLOW = "heap-buffer-overflow"
    STACK_BUFFER_OVERFLOW = "stack-buffer-overflow"
    STACK_BUFFER_UNDERFLOW = "stack-buffer-underflow"
    STACK_USE_AFTER_RETURN = "stack-use-after-return"
    STACK_USE_AFTER_SCOPE = "stack-use-after-scope"
    GLOBAL_BUFFER_OVERFLOW = "global-buffer-overflow"
    USE_AFTER_POISON = "use-after-poison"
    DOUBLE_FREE = "double-free"
    BAD_FREE = "bad-free"
    ALLOC_DEALLOC_MISMATCH = "alloc-dealloc-mismatch"
    NEW_DELETE_TYPE_MISMATCH = "new-delete-type-mismatch"
    SEGV = "SEGV"
    OUT_OF_MEMORY = "out-of-memory"
    LEAK = "leak"
    UNDEFINED_BEHAVIOUR = "undefined-behaviour"
    OTHER = "other"  # an AddressSanitizer error this parser does not name (its words kept in `description`)

    @property
    def stops_the_process(self) -> bool:
        """AddressSanitizer ends the process at its first error; leaks are found at exit, UB is reported and run on."""
        return self not in (FindingKind.LEAK, FindingKind.UNDEFINED_BEHAVIOUR)


# AddressSanitizer's phrases for the errors its header line names in words
ASAN_PHRASES = {"attempting double-free": FindingKind.DOUBLE_FREE,
                "attempting free on address which was not malloc()-ed": FindingKind.BAD_FREE,
                "allocator is out of memory": FindingKind.OUT_OF_MEMORY}  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """One frame of a sanitizer's stack trace: the function and, where the code has debug info, file:line."""

    function: str
    file: str | None = None
    line: int | None = None
    module: str | None = None

    def where(self) -> str:
        if self.file:
            return f"{self.file}:{self.line}" if self.line is not None else self.file
        return self.module or "?"

    def __str__(self) -> str:
        return f"{self.function} {self.where()}"


@dataclass
class Finding:
    """One sanitizer report: its kind, its first line, its stack (the access, or the allocation of a leak), and
    the consumer's frame in it (None: the report is llama.cpp's or the interpreter's, not the consumer's)."""

    kind: FindingKind
    description: str
    frames: list[Frame] = field(default_factory=list)
    consumer_frame: Frame | None = None
    detail: str = ""  # READ/WRITE of size N; a leak's byte count; UB's message

    @property
    def consumer(self) -> bool:
        return self.consumer_frame is not None

    @property
    def location(self) -> str | None:
        """The consumer's file:line (the first frame of the stack in its sources)."""
        return self.consumer_frame.where() if self.consumer_frame else None

    def line(self) -> str:
        where = f" at {self.location} in {self.consumer_frame.function}" if self.consumer_frame else ""
        top = "" if self.consumer_frame else f" (top frame: {self.frames[0]})" if self.frames else ""
        return f"{self.kind.value}{where}{top}: {self.detail or self.description}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["location"] = self.location
        data["consumer"] = self.consumer
        data["frames"] = [str(f) for f in self.frames[:FRAMES_KEPT]]
        data["consumer_frame"] = str(self.consumer_frame) if self.consumer_frame else None
        return data


# --- the runtime ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """The sanitizer runtime libraries to preload for these kinds (AddressSanitizer's first)."""

    kinds: tuple[str, ...]
    libraries: tuple[Path, ...]


def compiler() -> str:
    """The C compiler CMake picks for the shim: $CC, else `cc`."""
    return os.environ.get("CC") or "cc"


@functools.lru_cache(maxsize=8)
def find_runtime(kinds: tuple[str, ...]) -> Runtime:
    """The compiler's runtime for each kind (`cc -print-file-name=libasan.so`), after a test compile with the flags;
    SanitizerError with the reason where the compiler or its runtime is missing."""
    unknown = [k for k in kinds if k not in RUNTIME_LIBS]
    if unknown:
        raise SanitizerError(f"unknown sanitizer(s) {', '.join(unknown)}; known: {', '.join(SANITIZERS)}")
    cc = compiler()
    if shutil.which(cc) is None:
        raise SanitizerError(f"no C compiler {cc!r} on PATH to ask for the sanitizer runtime")
    libraries = []
    for kind in sorted(kinds, key=SANITIZERS.index):  # libasan first: it must come first in the process
        name = RUNTIME_LIBS[kind]
        answer = _run([cc, f"-print-file-name={name}"]).strip()
        path = Path(answer)
        if not path.is_absolute() or not path.is_file():
            raise SanitizerError(f"the {kind} sanitizer's runtime is not installed: `{cc} -print-file-name={name}` "
                                 f"gave {answer or 'nothing'} (install the compiler's {name.split('.')[0]}, e.g. "
                                 "apt-get install libasan8 libubsan1)")  # fmt: skip
        libraries.append(path.resolve())
    _test_compile(cc, kinds)
    return Runtime(tuple(kinds), tuple(libraries))


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SanitizerError(f"`{' '.join(cmd)}` could not run: {exc}") from exc
    return proc.stdout if proc.returncode == 0 else ""


def _test_compile(cc: str, kinds: tuple[str, ...]) -> None:
    """A shared object built with the flags: a compiler that takes -fsanitize= but cannot link it says so here."""
    with tempfile.TemporaryDirectory(prefix="llama-migrate-sanitize-") as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int probe(int *p) { return p[1]; }\n")
        cmd = [cc, f"-fsanitize={','.join(kinds)}", "-shared", "-fPIC", "-o", str(Path(tmp) / "probe.so"), str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SanitizerError(f"the compiler cannot build with -fsanitize={','.join(kinds)}: {said}")


def unavailable(kinds: Iterable[str]) -> str:
    """Why these sanitizers cannot run here ("" when they can)."""
    try:
        find_runtime(tuple(kinds))
    except SanitizerError as exc:
        return str(exc)
    return ""


def sanitizer_env(runtime: Runtime, log_stem: Path | None, suppressions: Path | None,
                  base: dict[str, str]) -> dict[str, str]:  # fmt: skip
    """The environment of a process loading a sanitized shim: the runtime preloaded (before what `base` preloads;
    glibc's malloc debug library left out, it would take malloc from the sanitizer), reports to `log_stem.<pid>`
    (None: to stderr, with leak detection off: a probe that only loads), the interpreter's leaks suppressed."""
    preload = [str(p) for p in runtime.libraries]
    # glibc's malloc debug library and the free() that fills freed blocks (verify/perturb.py) left out: the
    # sanitizer's allocator takes malloc and free, and poisons what is freed itself
    preload += [p for p in base.get("LD_PRELOAD", "").split(":") if p and "libc_malloc_debug" not in p
                and not is_perturb_preload(p) and p not in preload]  # fmt: skip
    common = [f"exitcode={SANITIZER_EXIT}", "symbolize=1"] + ([f"log_path={log_stem}"] if log_stem else [])
    asan = [*common, f"detect_leaks={1 if log_stem else 0}", "detect_stack_use_after_return=1",
            "halt_on_error=1", "print_summary=1"]  # fmt: skip
    lsan = [*common] + ([f"suppressions={suppressions}", "print_suppressions=0"] if suppressions else [])
    # UBSan's own file (`<stem>.ubsan.<pid>`): the two runtimes writing one file would overwrite each other's lines
    ubsan = [*common[:2], "print_stacktrace=1", "halt_on_error=0"]
    ubsan += [f"log_path={log_stem}.ubsan"] if log_stem else []
    env = {"LD_PRELOAD": ":".join(preload), "ASAN_OPTIONS": ":".join(asan), "LSAN_OPTIONS": ":".join(lsan),
           "UBSAN_OPTIONS": ":".join(ubsan), SANITIZED_ENV: ",".join(runtime.kinds)}  # fmt: skip
    return env


def keep_loaded(job: Path) -> None:
    """In a sanitized check's child: the library stays mapped until exit (RTLD_NODELETE), so that LeakSanitizer,
    which reports after the interpreter has closed it, still resolves the shim's frames to file:line."""
    import ctypes
    import json

    library = json.loads(job.read_text())["target"]["library"]
    with contextlib.suppress(OSError):  # a library that does not load fails the check with the loader's words
        ctypes.CDLL(library, mode=os.RTLD_NOW | os.RTLD_NODELETE)


def is_sanitized(library: Path) -> tuple[str, ...]:
    """The sanitizers a library was built with (its build manifest), () for a plain one."""
    from verify.manifest import read_manifest

    manifest = read_manifest(Path(library))
    return tuple(manifest.options.get("sanitize") or ()) if manifest else ()


def load_env(library: Path) -> dict[str, str] | None:
    """For a process that only loads `library` (the model probe): the runtime preloaded where it is sanitized."""
    kinds = is_sanitized(library)
    if not kinds:
        return None
    try:
        runtime = find_runtime(kinds)
    except SanitizerError:
        return None  # the load fails with the loader's own words
    return dict(os.environ) | sanitizer_env(runtime, None, None, dict(os.environ))


# --- whose code: the consumer's sources -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerSources:
    """The consumer's files: the shim's sources its build manifest lists, and its headers (under its root, outside
    the llama.cpp tree it was built against)."""

    files: frozenset[str]
    root: str | None = None
    llama_tree: str | None = None

    def contains(self, file: str | None) -> bool:
        if not file:
            return False
        path = os.path.normpath(file)
        if path in self.files:
            return True
        inside = self.root is not None and path.startswith(self.root.rstrip("/") + "/")
        return inside and not (self.llama_tree and path.startswith(self.llama_tree.rstrip("/") + "/"))

    @classmethod
    def of_library(cls, library: Path, llama_tree: Path | None = None) -> ConsumerSources:
        from verify.manifest import read_manifest

        manifest = read_manifest(Path(library))
        if manifest is None:
            return cls(frozenset())
        tree = str(llama_tree or manifest.llama_tree or "") or None
        return cls(frozenset(os.path.normpath(s) for s in manifest.sources), manifest.consumer_root, tree)


# --- reading the reports --------------------------------------------------------------------------------------------

ASAN_HEADER = re.compile(r"^==\d+==ERROR: AddressSanitizer: (?P<what>.+)$")
# the address and thread a header ends with: not part of what happened
ADDRESS_TAIL = re.compile(r"(?: on(?: unknown)?(?: address)?)? 0x[0-9a-fA-F]+\b.*$")
LEAKS_HEADER = re.compile(r"^==\d+==ERROR: LeakSanitizer: detected memory leaks")
LEAK_BLOCK = re.compile(r"^(?P<which>Direct|Indirect) leak of (?P<bytes>\d+) byte\(s\) in (?P<count>\d+) object")
UBSAN_LINE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:\d+:)? runtime error: (?P<msg>.*)$")
ACCESS = re.compile(r"^(?P<access>(?:READ|WRITE) of size \d+) at ")
FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-fA-F]+ (?:in (?P<fn>.+?) )?(?P<loc>\S+)$")
LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::\d+)?$")
# lines between a report's first line and its stack (the access: `WRITE of size 8 at ...`)
STACK_LOOKAHEAD = 3
# the runtime's own frames at the top of a stack (the allocator, the interceptors): not where the program was
RUNTIME_FILE = re.compile(r"libsanitizer|compiler-rt|/asan_|/lsan_|/ubsan_|/sanitizer_common")


def parse_frame(text: str) -> Frame | None:
    match = FRAME.match(text)
    if match is None:
        return None
    function, loc = match["fn"] or "?", match["loc"]
    if loc.startswith("(") and loc.endswith(")"):
        return Frame(function, module=loc[1:-1])
    located = LOCATION.match(loc)
    if located:
        return Frame(function, located["file"], int(located["line"]))
    return Frame(function, loc)


def _stack(lines: list[str], start: int) -> list[Frame]:
    """The stack that starts within a few lines of `start` (after an access line), up to its first other line."""
    frames: list[Frame] = []
    for offset, text in enumerate(lines[start:]):
        frame = parse_frame(text)
        if frame is not None:
            frames.append(frame)
        elif frames or offset >= STACK_LOOKAHEAD:  # the stack ended, or this report has none of its own
            break
    return frames


def _own_frames(frames: list[Frame]) -> list[Frame]:
    """The stack without the sanitizer runtime's frames at its top (malloc, operator new, the interceptors)."""
    index = 0
    while index < len(frames) and frames[index].file and RUNTIME_FILE.search(frames[index].file or ""):
        index += 1
    return frames[index:]


def _finding(kind: FindingKind, description: str, frames: list[Frame], sources: ConsumerSources,
             detail: str = "") -> Finding:  # fmt: skip
    frames = _own_frames(frames)
    mine = next((f for f in frames if sources.contains(f.file)), None)
    return Finding(kind, description, frames, mine, detail)


def _asan_kind(what: str) -> FindingKind:
    """The kind from the header's words: `heap-use-after-free on address ...`, `attempting double-free on ...`."""
    phrase = next((p for p in ASAN_PHRASES if what.startswith(p)), None)
    if phrase is not None:
        return ASAN_PHRASES[phrase]
    token = what.split()[0] if what else ""
    try:
        return FindingKind(token)
    except ValueError:
        return FindingKind.OTHER


def parse_report(text: str, sources: ConsumerSources) -> list[Finding]:
    """Every finding in a sanitizer log (one process's `log_path` file, or several joined): AddressSanitizer's error,
    LeakSanitizer's leaks (one finding per leak), UBSan's runtime errors."""
    lines = text.splitlines()
    findings: list[Finding] = []
    in_leaks = False
    for index, raw in enumerate(lines):
        line = raw.strip()
        header = ASAN_HEADER.match(line)
        if header and not LEAKS_HEADER.match(line):
            in_leaks = False
            what = ADDRESS_TAIL.sub("", header["what"].strip())
            access = next((m["access"] for i in range(index + 1, min(index + 4, len(lines)))
                           if (m := ACCESS.match(lines[i].strip()))), "")  # fmt: skip
            detail = f"{access} ({what})" if access else what
            findings.append(_finding(_asan_kind(what), line, _stack(lines, index + 1), sources, detail))
        elif LEAKS_HEADER.match(line):
            in_leaks = True
        elif in_leaks and (leak := LEAK_BLOCK.match(line)):
            detail = f"{leak['which'].lower()} leak of {leak['bytes']} byte(s) in {leak['count']} object(s)"
            findings.append(_finding(FindingKind.LEAK, line, _stack(lines, index + 1), sources, detail))
        elif ub := UBSAN_LINE.match(line):
            frames = _stack(lines, index + 1) or [Frame("?", ub["file"], int(ub["line"]))]
            finding = _finding(FindingKind.UNDEFINED_BEHAVIOUR, line, frames, sources, ub["msg"])
            if finding.consumer_frame is None and sources.contains(ub["file"]):
                finding.consumer_frame = Frame(frames[0].function, ub["file"], int(ub["line"]))
            findings.append(finding)
    return findings


def report_files(log_stem: Path) -> list[Path]:
    """What the runtime wrote for one check: `<stem>.<pid>` per process."""
    return sorted(log_stem.parent.glob(log_stem.name + ".*"))


def read_reports(log_stem: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in report_files(log_stem))


def excerpt(text: str, finding: Finding) -> str:
    """The lines of the report that belong to a finding (its first line on), for the evidence."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == finding.description), 0)
    return "\n".join(lines[start : start + REPORT_LINES_KEPT])


# --- a check under the sanitizers (verify/runner.py calls this for each check of a sanitized run) -------------------


def run_sanitized(job: Path, name: str, target: Any, options: Any, workdir: Path,
                  env: dict[str, str] | None) -> Any:  # fmt: skip
    """Check `name` on a sanitized build in a child with the runtime preloaded, its reports read into findings:
    skipped (with the reason) where the sanitizer cannot run here or the check's figure would be the sanitizer's."""
    from verify.checks import SKIPPED, CheckResult
    from verify.runner import _spawn, result_stem

    kinds = tuple(options.sanitize)
    if name in NOT_SANITIZED:
        return not_sanitized(name, target.label)
    try:
        runtime = find_runtime(kinds)
    except SanitizerError as exc:
        return CheckResult(name, SKIPPED, {"sanitize": list(kinds)}, f"skipped: --sanitize {','.join(kinds)} cannot "
                           f"run here: {exc}", build=target.label)  # fmt: skip
    logs = workdir / "sanitizer"
    logs.mkdir(exist_ok=True)
    stem = logs / result_stem(target.label, name)
    for old in report_files(stem):
        old.unlink()
    suppressions = workdir / "lsan-suppressions.txt"
    if not suppressions.is_file():
        suppressions.write_text(SUPPRESSIONS)
    base = dict(os.environ) | (env or {})
    end = _spawn(job, name, target.label, options.timeout, workdir,
                 (env or {}) | sanitizer_env(runtime, stem, suppressions, base), ())  # fmt: skip
    text = read_reports(stem)
    findings = parse_report(text, ConsumerSources.of_library(target.library, target.llama_tree))
    return judge(name, target.label, end, findings, text, options.timeout, kinds)


def not_sanitized(name: str, label: str) -> Any:
    """A check whose figure the sanitizer would decide (NOT_SANITIZED), skipped with the reason."""
    from verify.checks import SKIPPED, CheckResult

    return CheckResult(name, SKIPPED, {}, f"skipped: {NOT_SANITIZED[name]}", build=label)


def judge(name: str, label: str, end: Any, findings: list[Finding], text: str, timeout: float,
          kinds: tuple[str, ...]) -> Any:  # fmt: skip
    """The check's result with the sanitizer's findings: failed with the consumer's (the first one's kind and
    file:line in the message); an error where a finding that is not the consumer's stopped the check before its
    verdict (not verified); the other findings listed beside an unchanged verdict, as not the consumer's."""
    from verify.checks import ERROR, FAILED, PASSED
    from verify.runner import interpret

    mine = [f for f in findings if f.consumer]
    others = [f for f in findings if not f.consumer]
    stopped = next((f for f in findings if f.kind.stops_the_process), None)
    code = end.code
    if code == SANITIZER_EXIT and stopped is None:
        code = 0  # the leak check at exit, after the check's verdict: its leaks are judged below, not as a crash
    result = interpret(name, label, code, end.stderr, end.result_file, end.seconds, timeout)
    evidence: dict[str, Any] = {"sanitizers": list(kinds), "findings": [f.to_json() for f in mine]}
    if others:
        evidence["not_the_consumers"] = {
            "count": len(others),
            "why": "no frame of the report's stack lies in the consumer's sources: llama.cpp's or the interpreter's "
                   "(Python, cffi) own memory; reported, never the consumer's failure",
            "first": [f.line() for f in others[:5]],
        }  # fmt: skip
    if mine:
        more = f" (+{len(mine) - 1} more)" if len(mine) > 1 else ""
        # what the check said, where it got to say anything (a report that stopped the process is the whole story)
        before = f"; the check: {result.message}" if result.message and result.status != PASSED and stopped is None \
            else ""  # fmt: skip
        result.status = FAILED
        result.message = f"sanitizer: {mine[0].line()}{more}{before}"
        evidence["report"] = excerpt(text, mine[0])
    elif stopped is not None and end.code == SANITIZER_EXIT:
        result.status = ERROR
        result.message = (f"not verified under the sanitizer: it stopped the check on a report that is not the "
                          f"consumer's: {stopped.line()}")  # fmt: skip
        evidence["report"] = excerpt(text, stopped)
    result.evidence = result.evidence | {"sanitizer": evidence}
    return result
