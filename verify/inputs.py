"""The one validation layer for what a user hands a command: paths, output paths, numeric options, models and
libraries. Every check here runs before anything is built, run or written, and refuses with a `BadInput` that
carries the flag (or config key), the value, the problem and the remedy: a bad input is never reported as the
consumer's failure, and an output path that cannot be written is found before the first file is touched.

It lives in `verify/` (the lowest layer, importing nothing from `migrate`) so that `migrate verify`, `run`,
`gate`, `plan` and `apply` share it.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import platform
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from verify.errors import ToolError


class BadInput(ToolError):
    """An input refused before anything ran: `flag` is the option or config key, `value` what was given."""

    def __init__(self, flag: str, value: object, problem: str, remedy: str = "") -> None:
        self.flag, self.value, self.problem, self.remedy = flag, value, problem, remedy
        shown = f"{flag} {value!r}" if value is not None else flag
        super().__init__(f"{shown}: {problem}" + (f"; {remedy}" if remedy else ""))


class PathKind(enum.Enum):
    FILE = "file"
    DIR = "folder"
    ANY = "file or folder"


# --- paths read ---------------------------------------------------------------------------------------------------


def _os_reason(exc: OSError) -> str:
    """`[Errno 2] No such file or directory: 'x'` without the errno number and the repeated path."""
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def existing_path(flag: str, value: str | os.PathLike[str] | None, kind: PathKind = PathKind.ANY,
                  remedy: str = "", noun: str = "file or folder") -> Path:  # fmt: skip
    """A path that must exist and be readable: refuses an empty string (an unset "$SRC" must not mean the current
    folder), a dangling symlink, a symlink loop, a folder where a file is expected and the reverse."""
    if value is None or str(value).strip() == "":
        raise BadInput(flag, "" if value is None else str(value), "an empty path",
                       remedy or "give the path explicitly (an unset shell variable?)")  # fmt: skip
    path = Path(value)
    if "\0" in str(value):  # no file system path holds one (os.stat would raise ValueError)
        raise BadInput(flag, str(value), "contains a NUL byte", remedy)
    try:
        path.stat()
    except OSError as exc:
        raise BadInput(flag, str(value), _missing_reason(path, exc, noun), remedy) from exc
    if kind is PathKind.FILE and path.is_dir():
        raise BadInput(flag, str(value), "is a folder, not a file", remedy)
    if kind is PathKind.DIR and not path.is_dir():
        raise BadInput(flag, str(value), "is not a folder", remedy)
    if not os.access(path, os.R_OK):
        raise BadInput(flag, str(value), "cannot be read (permission denied)", remedy)
    return path


def _missing_reason(path: Path, exc: OSError, noun: str) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno != errno.ENOENT:  # a name too long, a file where a folder was expected, no permission
        return _os_reason(exc)
    if path.is_symlink():
        return f"a symlink to {os.readlink(path)}, which does not exist (a dangling symlink)"
    return f"no such {noun}"


def tree_links(flag: str, root: Path, skip: Iterable[str] = ()) -> None:
    """A tree to walk: no symlink loop inside it (os.walk would skip it, and resolving a file in it fails later)."""
    skipped = set(skip)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skipped]
        for name in (*dirnames, *filenames):
            entry = Path(dirpath) / name
            if entry.is_symlink():
                try:
                    entry.resolve(strict=True)
                except RuntimeError as exc:  # Python 3.11 says "Symlink loop" this way
                    raise BadInput(flag, str(root), f"{entry} is a symlink loop", "remove or fix that link") from exc
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise BadInput(flag, str(root), f"{entry} is a symlink loop",
                                       "remove or fix that link") from exc  # fmt: skip


@contextlib.contextmanager
def _said_as(flag: str, value: object) -> Iterator[None]:
    """An OSError while looking at a path (a name too long, a loop) as a BadInput naming the flag."""
    try:
        yield
    except OSError as exc:
        raise BadInput(flag, str(value), _os_reason(exc), "choose another path") from exc


# --- paths written ------------------------------------------------------------------------------------------------


def output_file(flag: str, value: str | os.PathLike[str] | None, makes_folder: bool = False) -> Path | None:
    """A file a command will write: proved writable now, before anything else is written. A file that exists is
    opened for appending (its bytes and times untouched); a new one is created and removed again. `makes_folder`:
    the command creates a missing folder for it (the markdown report does), so the nearest existing one must take
    a new entry instead."""
    if value is None:
        return None
    if str(value).strip() == "" or "\0" in str(value):
        raise BadInput(flag, str(value), "an empty path or one with a NUL byte", "give the file to write")
    path = Path(value)
    try:
        if path.is_dir():
            raise BadInput(flag, str(value), "is a folder", "give a file path inside it")
        parent = path.parent if str(path.parent) else Path(".")
        if makes_folder and not parent.exists():
            try:
                output_dir(flag, parent)
            except BadInput as exc:  # said of the path given, not of its folder
                raise BadInput(flag, str(value), exc.problem, exc.remedy) from exc
            return path
        if not parent.is_dir():
            raise BadInput(flag, str(value), f"its folder {parent} does not exist",
                           "create it first or choose another path")  # fmt: skip
        if path.exists():
            with path.open("ab"):
                pass
        else:
            with path.open("xb"):
                pass
            path.unlink()
    except OSError as exc:
        raise BadInput(flag, str(value), f"cannot be written ({_os_reason(exc)})",
                       "choose a path in a folder you can write") from exc  # fmt: skip
    return path


def output_dir(flag: str, value: str | os.PathLike[str] | None) -> Path | None:
    """A folder a command will create or write into: it, or the nearest folder above it that exists, must accept a
    new file (a temporary one, removed at once)."""
    if value is None:
        return None
    if str(value).strip() == "" or "\0" in str(value):
        raise BadInput(flag, str(value), "an empty path or one with a NUL byte", "give the folder to write")
    path = Path(value)
    with _said_as(flag, value):
        if path.exists() and not path.is_dir():
            raise BadInput(flag, str(value), "exists and is not a folder", "give a folder")
    existing = path
    try:
        while not existing.exists():
            if existing.is_symlink():
                raise BadInput(flag, str(value), f"{existing} is a dangling symlink",
                               "fix the link or choose another path")  # fmt: skip
            existing = existing.parent
        handle, probe = tempfile.mkstemp(prefix=".llama-migrate-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(flag, str(value), f"cannot be written in {existing} ({_os_reason(exc)})",
                       "choose a folder you can write") from exc  # fmt: skip
    return path


# --- numbers ------------------------------------------------------------------------------------------------------


def int_at_least(flag: str, value: int | None, low: int, remedy: str = "") -> int | None:
    if value is not None and value < low:
        raise BadInput(flag, value, f"must be at least {low}", remedy)
    return value


def number_in(flag: str, value: float | None, low: float, high: float | None = None, low_open: bool = False,
              remedy: str = "") -> float | None:  # fmt: skip
    """`low <= value <= high` (`low < value` when low_open); None passes (not given)."""
    if value is None:
        return None
    if value != value:  # NaN compares false with everything, and would pass every test below
        raise BadInput(flag, value, "is not a number", remedy)
    if (value <= low) if low_open else (value < low):
        raise BadInput(flag, value, f"must be {'above' if low_open else 'at least'} {low:g}", remedy)
    if high is not None and value > high:
        raise BadInput(flag, value, f"must be at most {high:g}", remedy)
    return value


# --- GGUF models --------------------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp's loader reads (1 was dropped long ago)
GGUF_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count


def check_gguf_header(flag: str, path: Path) -> None:
    """The header llama.cpp reads first: magic, a version it loads, counts that fit the file."""
    with path.open("rb") as handle:
        head = handle.read(GGUF_HEADER.size)
    if len(head) < GGUF_HEADER.size or head[:4] != GGUF_MAGIC:
        raise BadInput(flag, str(path), "not a GGUF model (no GGUF magic at its start)",
                       "pass a .gguf file (`migrate model` makes a tiny one)")  # fmt: skip
    _, version, tensors, metadata = GGUF_HEADER.unpack(head)
    if version not in GGUF_VERSIONS:
        raise BadInput(flag, str(path), f"GGUF version {version}; llama.cpp reads versions "
                       f"{', '.join(map(str, GGUF_VERSIONS))}", "convert the model again with a current gguf")
    size = path.stat().st_size
    # every tensor and metadata entry takes at least 8 bytes of header: counts past that are a damaged file
    if (tensors + metadata) * 8 > size:
        raise BadInput(flag, str(path), f"damaged GGUF header ({tensors} tensors, {metadata} metadata entries "
                       f"in {size} bytes)", "pass an intact model")  # fmt: skip


# --- ELF shared libraries -----------------------------------------------------------------------------------------

ELF_MAGIC = b"\x7fELF"
ELF_CLASSES = {1: 32, 2: 64}
ET_DYN = 3
# e_machine of the hosts llama.cpp builds on (platform.machine() -> ELF machine number)
HOST_MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "i386": 3, "i686": 3, "armv7l": 40,
                 "ppc64le": 21, "ppc64": 21, "s390x": 22, "riscv64": 243, "loongarch64": 258}  # fmt: skip
MACHINE_NAMES = {62: "x86-64", 183: "AArch64", 3: "i386", 40: "ARM", 21: "PowerPC64", 22: "s390", 243: "RISC-V",
                 258: "LoongArch", 8: "MIPS"}  # fmt: skip
SHT_DYNSYM, SHT_NOBITS, PT_LOAD = 11, 8, 1
STB_GLOBAL, STB_WEAK, STT_FUNC, STT_GNU_IFUNC = 1, 2, 2, 10
LIB_REMEDY = "pass the .so `migrate build` printed"


@dataclass(frozen=True)
class ElfLayout:
    """The record layouts of one ELF class (little-endian: what x86-64 and AArch64 Linux use)."""

    header: struct.Struct
    section: struct.Struct
    program: struct.Struct
    symbol: struct.Struct


ELF64 = ElfLayout(struct.Struct("<16sHHIQQQIHHHHHH"), struct.Struct("<IIQQQQIIQQ"), struct.Struct("<IIQQQQQQ"),
                  struct.Struct("<IBBHQQ"))  # fmt: skip
ELF32 = ElfLayout(struct.Struct("<16sHHIIIIIHHHHHH"), struct.Struct("<IIIIIIIIII"), struct.Struct("<IIIIIIII"),
                  struct.Struct("<IIIBBH"))  # fmt: skip


@dataclass(frozen=True)
class SharedLibrary:
    """An ELF shared object this host can load, and the functions it exports."""

    path: Path
    exports: frozenset[str]


def host_elf() -> tuple[int, int | None]:
    """(class in bits, e_machine) of this Python process: what dlopen will accept."""
    return struct.calcsize("P") * 8, HOST_MACHINES.get(platform.machine().lower())


def check_library(flag: str, value: str | os.PathLike[str] | None) -> SharedLibrary:
    """An ELF shared object of this host's class and machine, whole (no segment past the end of the file), with
    its exported functions read from the dynamic symbol table."""
    path = existing_path(flag, value, PathKind.FILE, f"build it with `migrate build`, then {LIB_REMEDY}", "library")
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC:
        raise BadInput(flag, str(path), "not a shared library (no ELF header)", LIB_REMEDY)
    bits, machine = host_elf()
    got_bits = ELF_CLASSES.get(data[4])
    if got_bits != bits or data[5] != 1:
        shown = f"{got_bits}-bit" if got_bits else "unknown-class"
        endian = "" if data[5] == 1 else ", big-endian"
        raise BadInput(flag, str(path), f"a {shown}{endian} ELF file; this host loads {bits}-bit little-endian ones",
                       f"build it for this host with `migrate build`, then {LIB_REMEDY}")  # fmt: skip
    layout = ELF64 if bits == 64 else ELF32
    if len(data) < layout.header.size:
        raise BadInput(flag, str(path), "truncated (shorter than an ELF header)", LIB_REMEDY)
    fields = layout.header.unpack_from(data)
    e_type, e_machine, phoff, shoff, phentsize, phnum, shentsize, shnum = (fields[1], fields[2], fields[5], fields[6],
                                                                           fields[9], fields[10], fields[11],
                                                                           fields[12])  # fmt: skip
    if machine is not None and e_machine != machine:
        raise BadInput(flag, str(path), f"built for {MACHINE_NAMES.get(e_machine, f'machine {e_machine}')}; this "
                       f"host is {MACHINE_NAMES.get(machine, platform.machine())}", f"build it here, then {LIB_REMEDY}")
    if e_type != ET_DYN:
        raise BadInput(flag, str(path), "an ELF file but not a shared library (an executable or object file?)",
                       LIB_REMEDY)  # fmt: skip
    _check_whole(flag, path, data, layout, phoff, phnum, phentsize, shoff, shnum, shentsize)
    return SharedLibrary(path, frozenset(_exported_functions(data, layout, shoff, shnum, shentsize)))


def _check_whole(flag: str, path: Path, data: bytes, layout: ElfLayout, phoff: int, phnum: int, phentsize: int,
                 shoff: int, shnum: int, shentsize: int) -> None:  # fmt: skip
    """dlopen maps the loadable segments: one that runs past the end of the file dies with SIGBUS when touched,
    which a check would report as the library crashing. Refuse a truncated file here instead."""
    size = len(data)
    truncated = BadInput(flag, str(path), f"truncated or damaged ({size} bytes; its headers describe more)",
                         f"build it again, then {LIB_REMEDY}")  # fmt: skip
    if phoff + phnum * phentsize > size or shoff + shnum * shentsize > size:
        raise truncated
    for index in range(phnum):
        p_type, *rest = layout.program.unpack_from(data, phoff + index * phentsize)
        offset, filesz = (rest[1], rest[4]) if layout is ELF64 else (rest[0], rest[3])
        if p_type == PT_LOAD and offset + filesz > size:
            raise truncated
    for index in range(shnum):
        section = layout.section.unpack_from(data, shoff + index * shentsize)
        if section[1] != SHT_NOBITS and section[4] + section[5] > size:
            raise truncated


def _exported_functions(data: bytes, layout: ElfLayout, shoff: int, shnum: int, shentsize: int) -> set[str]:
    """Defined global (or weak) functions of the dynamic symbol table: what dlsym finds."""
    names: set[str] = set()
    sections = [layout.section.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    for section in sections:
        if section[1] != SHT_DYNSYM or section[6] >= len(sections):
            continue
        strtab = sections[section[6]]
        strings = data[strtab[4] : strtab[4] + strtab[5]]
        entsize = section[9] or layout.symbol.size
        for offset in range(section[4], section[4] + section[5] - entsize + 1, entsize):
            symbol = layout.symbol.unpack_from(data, offset)
            if layout is ELF64:
                name, info, other, shndx = symbol[0], symbol[1], symbol[2], symbol[3]
            else:
                name, info, other, shndx = symbol[0], symbol[3], symbol[4], symbol[5]
            binding, kind, visibility = info >> 4, info & 0xF, other & 0x3
            if shndx == 0 or binding not in (STB_GLOBAL, STB_WEAK) or kind not in (STT_FUNC, STT_GNU_IFUNC):
                continue
            if visibility in (0, 3):  # default or protected: visible to dlsym
                end = strings.find(b"\0", name)
                names.add(strings[name : end if end >= 0 else len(strings)].decode(errors="replace"))
    return names


def require_exports(flag: str, library: SharedLibrary, header: Path, functions: Iterable[str]) -> None:
    """The functions the checklist will call through the header must be exported by the library: otherwise it is
    not the library of this header (or was built without them), and every check would fail for that reason."""
    wanted = sorted(set(functions))
    missing = [name for name in wanted if name not in library.exports]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise BadInput(flag, str(library.path), f"does not export {len(missing)} of the {len(wanted)} functions "
                       f"{header} declares that the checklist calls: {shown}",
                       "pass the library built from this header (`migrate build` prints it), or the header it was "
                       "built from (--header)")  # fmt: skip

