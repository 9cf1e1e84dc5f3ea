"""Sanitizers in verification (issue 25, item 4): `migrate verify --sanitize address,undefined`.

A copy of fixtures/localllm with one planted defect (localllm_tokenize writes the token count through a pointer
into a record it has just freed: harmless to every check's output, visible only to AddressSanitizer) is built with
the sanitizers at b5415 (the b5421 stand-in); the tokenize check run under them fails with a heap-use-after-free at
the shim's file:line. The unplanted fixture, built the same way, passes under the sanitizers (llama.cpp's and the
interpreter's own reports, where there are any, are listed as not the consumer's). The report parser is tested on
captured logs (no build), and MALLOC_PERTURB_ on every check's process.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from migrate.build import BuildOptions, BuildResult, build
from migrate.paths import cache_root
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER
from verify import sanitize
from verify.checks import FAILED, PASSED, SKIPPED, CheckResult
from verify.faults import FAULTS, Fault, make_variant
from verify.manifest import read_manifest
from verify.perturb import PERTURB_BYTE, is_perturb_preload, perturb_library
from verify.runner import check_env, child_env, run_checks
from verify.sanitize import ConsumerSources, FindingKind, parse_report
from verify.session import Options, Target

SANITIZERS = ["address", "undefined"]
SHIM = "custom_files/localllm_capi.cpp"
# the checks that call the planted function (tokenize) first; the unplanted fixture runs these and a generation
SANITIZED_CHECKS = ["tokenize_detokenize", "generate", "generate_parallel"]

COUNT_WRITTEN_AFTER_FREE = Fault(
    "count_written_after_free",
    "localllm_tokenize writes the token count through a pointer into a result record it has already freed",
    "tokenize_detokenize",
    ("b5421", "b7785"),
    ((r"\*tokens_out = out;\n(\s*)\*n_tokens_out = tokens\.size\(\);",
      "struct token_list { int32_t * data; size_t reserved[2]; size_t count; };\n"
      r"\1token_list * list = new token_list{out, {0, 0}, 0};\n"
      r"\1size_t * count_slot = &list->count;\n"
      r"\1*tokens_out = list->data;\n"
      r"\1delete list;\n"
      r"\1*count_slot = tokens.size();  /* planted fault: written after the record was freed */\n"
      r"\1*n_tokens_out = tokens.size();"),),
)  # fmt: skip
PLANTED_LINE_MARK = "planted fault: written after the record was freed"


def variant(fault: Fault) -> Path:
    """The fixture with `fault` planted, at a path named by its contents (the shim cache is keyed by source paths:
    a later session reuses the build)."""
    digest = hashlib.sha256(repr(fault.edits).encode())
    for path in sorted(p for p in LOCALLLM.rglob("*") if p.is_file() and "build" not in p.parts):
        digest.update(str(path.relative_to(LOCALLLM)).encode() + path.read_bytes())
    folder = cache_root() / "test-variants" / f"{fault.key}-{digest.hexdigest()[:12]}" / "localllm"
    if not (folder / "custom_files").is_dir():
        if folder.exists():
            shutil.rmtree(folder)
        make_variant(LOCALLLM, folder, fault)
    return folder


def sanitized_build(src: Path, tree: SourceTree) -> Path:
    result = build(src, tree, BuildOptions(sanitize=tuple(SANITIZERS)))
    assert result.ok, [str(e) for e in result.errors] or result.log[-3000:]
    return Path(result.library)


def run(library: Path, root: Path, model: Path, names: list[str]) -> dict[str, CheckResult]:
    verify = tomllib.loads((LOCALLLM / "llama-migrate.toml").read_text())["verify"]
    target = Target(library, root / "custom_files" / "localllm_capi.h", model, "b5415", verify=verify,
                    config_root=root)  # fmt: skip
    results = run_checks(target, Options(timeout=300, sanitize=list(SANITIZERS), jobs=2), names)
    return {r.name: r for r in results}


WHY_NOT = sanitize.unavailable(SANITIZERS)
needs_runtime = pytest.mark.skipif(bool(WHY_NOT), reason=f"sanitizers cannot run here: {WHY_NOT}")


# --- on real builds --------------------------------------------------------------------------------------------------


@needs_runtime
@pytest.mark.slow
def test_planted_use_after_free_fails_with_the_shims_file_and_line(old_tree: SourceTree, tiny_model: Path) -> None:
    src = variant(COUNT_WRITTEN_AFTER_FREE)
    library = sanitized_build(src, old_tree)
    result = run(library, src, tiny_model, ["tokenize_detokenize"])["tokenize_detokenize"]
    assert result.status == FAILED, result.message
    findings = result.evidence["sanitizer"]["findings"]
    assert findings and findings[0]["kind"] == FindingKind.HEAP_USE_AFTER_FREE.value, findings
    planted = next(i for i, line in enumerate((src / SHIM).read_text().splitlines(), 1) if PLANTED_LINE_MARK in line)
    assert findings[0]["location"] == f"{src / SHIM}:{planted}", findings[0]
    assert result.message.startswith(f"sanitizer: heap-use-after-free at {src / SHIM}:{planted} in localllm_tokenize")


@needs_runtime
@pytest.mark.slow
def test_planted_leak_is_found_at_exit_with_the_shims_file(old_tree: SourceTree, tiny_model: Path) -> None:
    """free_string_array frees every result string but the first (verify/faults.py result_string_leaked): the
    outputs are right, and LeakSanitizer, at the child's exit, finds the string the shim allocated."""
    src = variant(FAULTS["result_string_leaked"])
    library = sanitized_build(src, old_tree)
    result = run(library, src, tiny_model, ["generate_parallel"])["generate_parallel"]
    assert result.status == FAILED, result.message
    findings = result.evidence["sanitizer"]["findings"]
    assert findings and {f["kind"] for f in findings} == {FindingKind.LEAK.value}, findings
    assert all(f["location"].startswith(f"{src / SHIM}:") for f in findings), findings
    assert result.message.startswith("sanitizer: leak at ")


@needs_runtime
@pytest.mark.slow
def test_unplanted_fixture_passes_under_the_sanitizers(old_tree: SourceTree, tiny_model: Path,
                                                       localllm_old_build: BuildResult) -> None:  # fmt: skip
    library = sanitized_build(LOCALLLM, old_tree)
    plain = Path(localllm_old_build.library)  # built before: the sanitized build went to a folder of its own
    assert plain.is_file() and library.parent.parent.name == plain.parent.parent.name + "-san-address-undefined"
    assert (read_manifest(library).options["sanitize"], read_manifest(plain).options["sanitize"]) == (SANITIZERS, [])
    results = run(library, LOCALLLM, tiny_model, SANITIZED_CHECKS)
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(SANITIZED_CHECKS, PASSED), \
        {n: r.message[:400] for n, r in results.items()}
    for result in results.values():  # what the sanitizers saw that is not the fixture's is said, and is no failure
        assert result.evidence["sanitizer"]["findings"] == []


def test_a_sanitizer_that_cannot_run_skips_every_check(tmp_path: Path) -> None:
    """An unknown runtime (here: a compiler that is not there) skips, with the reason; nothing passes."""
    target = Target(tmp_path / "lib.so", LOCALLLM_HEADER, tmp_path / "m.gguf", "build")
    options = Options(sanitize=["address"])
    sanitize.find_runtime.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CC", str(tmp_path / "no-such-cc"))
        result = sanitize.run_sanitized(tmp_path / "job.json", "tokenize_detokenize", target, options, tmp_path, None)
    sanitize.find_runtime.cache_clear()
    assert result.status == SKIPPED and "no C compiler" in result.message, result.message


# --- the report parser, on captured logs -----------------------------------------------------------------------------

SOURCES = ConsumerSources(frozenset({"/src/app/shim.cpp"}), "/src/app", "/cache/llama.cpp")

# AddressSanitizer's report of the planted fault (gcc 12), paths shortened
USE_AFTER_FREE_LOG = """\
=================================================================
==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x603000012345 at pc 0x7f01 bp 0x7ffd sp 0x7ffd
WRITE of size 8 at 0x603000012345 thread T0
    #0 0x7f9167718270 in localllm_tokenize /src/app/shim.cpp:473
    #1 0x7f91677e1051 in ffi_call_unix64 (/venv/_cffi_backend.cpython-311-x86_64-linux-gnu.so+0x29051)
    #2 0x7f916875861c in _PyObject_MakeTpCall Objects/call.c:214

0x603000012345 is located 24 bytes inside of 32-byte region [0x60300001232d,0x60300001234d)
freed by thread T0 here:
    #0 0x7f91694b76a8 in operator delete(void*, unsigned long) ../../../../src/libsanitizer/asan/asan_new_delete.cpp:164
    #1 0x7f9167718226 in localllm_tokenize /src/app/shim.cpp:472

previously allocated by thread T0 here:
    #0 0x7f91694b7aa8 in operator new(unsigned long) ../../../../src/libsanitizer/asan/asan_new_delete.cpp:95
    #1 0x7f91677181f0 in localllm_tokenize /src/app/shim.cpp:469

SUMMARY: AddressSanitizer: heap-use-after-free /src/app/shim.cpp:473 in localllm_tokenize
"""

LEAKS_LOG = """\
=================================================================
==4243==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 17604 byte(s) in 11 object(s) allocated from:
    #0 0x7fdeab0b89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7fdeaa3af897 in _PyObject_Malloc Objects/obmalloc.c:2003

Direct leak of 40 byte(s) in 1 object(s) allocated from:
    #0 0x7fdeab0b89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7fdea93491a6 in dup_cstring /src/app/shim.cpp:88
    #2 0x7fdea93492a6 in localllm_generate_parallel /src/app/shim.cpp:1012
    #3 0x7fdea9953051 in ffi_call_unix64 (/venv/_cffi_backend.cpython-311-x86_64-linux-gnu.so+0x29051)

Indirect leak of 64 byte(s) in 2 object(s) allocated from:
    #0 0x7fdeab0b89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7fdea9350000 in ggml_backend_cpu_init /cache/llama.cpp/ggml/src/ggml-cpu/ggml-cpu.cpp:200
    #2 0x7fdea9350100  (<unknown module>)

SUMMARY: AddressSanitizer: 17708 byte(s) leaked in 14 allocation(s).
"""

UBSAN_LOG = """\
/src/app/shim.cpp:640:26: runtime error: signed integer overflow: 5 + 2147483647 cannot be represented in type 'int'
    #0 0x7fdea9349305 in localllm_generate /src/app/shim.cpp:640
    #1 0x7fdea9953051 in ffi_call_unix64 (/venv/_cffi_backend.cpython-311-x86_64-linux-gnu.so+0x29051)
"""


def test_use_after_free_report_names_the_consumers_line() -> None:
    (finding,) = parse_report(USE_AFTER_FREE_LOG, SOURCES)
    assert finding.kind is FindingKind.HEAP_USE_AFTER_FREE
    assert finding.location == "/src/app/shim.cpp:473"  # the access, not where it was freed (472) or allocated
    assert finding.consumer_frame is not None and finding.consumer_frame.function == "localllm_tokenize"
    assert finding.detail == "WRITE of size 8 (heap-use-after-free)"
    assert finding.kind.stops_the_process


def test_leaks_are_the_consumers_only_with_a_frame_in_its_sources() -> None:
    python, shim, llama = parse_report(LEAKS_LOG, SOURCES)
    assert [f.kind for f in (python, shim, llama)] == [FindingKind.LEAK] * 3
    assert not python.consumer and not llama.consumer  # the interpreter's, llama.cpp's (its tree is not the consumer)
    assert shim.location == "/src/app/shim.cpp:88" and shim.detail == "direct leak of 40 byte(s) in 1 object(s)"
    assert python.frames[0].function == "_PyObject_Malloc"  # the allocator's own frame is not where it leaked
    assert not shim.kind.stops_the_process


def test_undefined_behaviour_report() -> None:
    (finding,) = parse_report(UBSAN_LOG, SOURCES)
    assert finding.kind is FindingKind.UNDEFINED_BEHAVIOUR and finding.location == "/src/app/shim.cpp:640"
    assert finding.detail.startswith("signed integer overflow")


def test_asan_errors_named_in_words_and_unknown_ones() -> None:
    double = "==1==ERROR: AddressSanitizer: attempting double-free on 0x602000000010 in thread T0:\n" \
             "    #0 0x1 in free ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:52\n" \
             "    #1 0x2 in localllm_free_string /src/app/shim.cpp:1084\n"  # fmt: skip
    (finding,) = parse_report(double, SOURCES)
    assert finding.kind is FindingKind.DOUBLE_FREE and finding.location == "/src/app/shim.cpp:1084"
    (other,) = parse_report("==1==ERROR: AddressSanitizer: requested allocation size exceeds maximum\n", SOURCES)
    assert other.kind is FindingKind.OTHER and not other.consumer
    oom = "==2==ERROR: AddressSanitizer: allocator is out of memory trying to allocate 0x100000000 bytes\n"
    assert parse_report(oom, SOURCES)[0].kind is FindingKind.OUT_OF_MEMORY


def test_judge_fails_on_the_consumers_finding_and_not_on_others(tmp_path: Path) -> None:
    from verify.runner import ChildEnd

    result_file = tmp_path / "r.json"
    result_file.write_text('{"result": {"name": "c", "status": "passed"}, "closed": true}')
    leaked = ChildEnd(sanitize.SANITIZER_EXIT, "", result_file, 1.0)  # leaks found at exit, after the verdict
    ours = sanitize.judge("c", "b", leaked, parse_report(LEAKS_LOG, SOURCES), LEAKS_LOG, 60, ("address",))
    assert ours.status == FAILED and ours.message.startswith("sanitizer: leak at /src/app/shim.cpp:88")
    theirs_only = [f for f in parse_report(LEAKS_LOG, SOURCES) if not f.consumer]
    theirs = sanitize.judge("c", "b", leaked, theirs_only, LEAKS_LOG, 60, ("address",))
    assert theirs.status == PASSED and theirs.evidence["sanitizer"]["not_the_consumers"]["count"] == 2
    result_file.unlink()  # stopped before its verdict by a report that is not the consumer's: not verified
    foreign = USE_AFTER_FREE_LOG.replace("/src/app/shim.cpp", "/cache/llama.cpp/src/llama.cpp")
    stopped = ChildEnd(sanitize.SANITIZER_EXIT, "", result_file, 1.0)
    error = sanitize.judge("c", "b", stopped, parse_report(foreign, SOURCES), foreign, 60, ("address",))
    assert error.status == "error" and "not the consumer's" in error.message


# --- freed memory filled in every check's process -----------------------------------------------------------------

DANGLING_C = r"""
#include <stdlib.h>
#include <string.h>
/* the text is freed, and its pointer returned anyway */
const char *dangling(void) {
    char *text = strdup("yesterday's text, long enough to span well past glibc's own free-list words");
    free(text);
    return text;
}
"""


def read_dangling(library: Path, env: dict[str, str] | None) -> bytes:
    """What a child process reads through the dangling pointer, with `env` on top of this environment."""
    import subprocess
    import sys

    code = (f"import ctypes; f = ctypes.CDLL({str(library)!r}).dangling; f.restype = ctypes.c_void_p; "
            "import sys; sys.stdout.buffer.write(ctypes.string_at(f(), 64))")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], capture_output=True, env=child_env(env), check=True).stdout


def test_a_dangling_pointer_reads_the_fill_in_every_check_but_the_heap_and_timing_ones(tmp_path: Path) -> None:
    if perturb_library() is None:
        pytest.skip("no C compiler to build the preload (MALLOC_PERTURB_ is set instead)")
    (tmp_path / "dangling.c").write_text(DANGLING_C)
    library = tmp_path / "libdangling.so"
    subprocess.run(["cc", "-O0", "-shared", "-fPIC", "-o", str(library), str(tmp_path / "dangling.c")], check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MALLOC_PERTURB_", raising=False)
        filled = read_dangling(library, check_env("tokenize_detokenize", None))
        # past glibc's free-list words (the first 16 bytes), every byte is the fill
        assert filled[16:] == bytes([PERTURB_BYTE]) * 48, filled
        for plain in ("frees_release_memory", "throughput"):  # the plain allocator: heap figures, timing
            env = check_env(plain, None) or {}
            assert not any(is_perturb_preload(p) for p in child_env(env).get("LD_PRELOAD", "").split(":"))
        # where MALLOC_PERTURB_ is set already (the user, migrate mutate), it is left to glibc
        patch.setenv("MALLOC_PERTURB_", "7")
        assert "LD_PRELOAD" not in (check_env("generate", None) or {})


# --- the command lines ---------------------------------------------------------------------------------------------


def test_sanitize_option_reaches_the_build_and_the_checks() -> None:
    """`migrate run --sanitize` passes through to both builds and the verification; `migrate verify --sanitize`
    too; an unknown sanitizer is a usage error naming the known ones."""
    from migrate.cli import build_parser
    from migrate.cli.run import run_request
    from migrate.cli.verify import verify_request
    from migrate.pipeline import UsageError
    from verify.cli import UsageError as VerifyUsageError

    run_parser = build_parser()
    request = run_request(run_parser.parse_args(["run", "--sanitize", "address,undefined"]))
    assert request.sanitize == ("address", "undefined") and request.build_options().sanitize == request.sanitize
    assert run_request(run_parser.parse_args(["run"])).build_options().sanitize == ()
    with pytest.raises(UsageError, match="known: address, undefined"):
        run_request(run_parser.parse_args(["run", "--sanitize", "thread"]))
    verify_parser = build_parser()
    assert verify_request(verify_parser.parse_args(["verify", "--lib", "x.so", "--sanitize", "address"])).sanitize == (
        "address",)  # fmt: skip
    with pytest.raises(VerifyUsageError, match="--sanitize memory"):
        verify_request(verify_parser.parse_args(["verify", "--lib", "x.so", "--sanitize", "memory"]))
