"""Bindings inferred from a consumer's own header (real libclang parses), the [verify] config, and the clear
message when a header cannot be bound. Fast: no build, no model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LOCALLLM, REPO
from verify.binding import BindingIncomplete, VerifyConfig, VerifyConfigError, infer
from verify.bindings import BindingError, find_header
from verify.capi import HeaderError, read_api

NEXT_HEADER = REPO / "fixtures" / "localllm-next" / "custom_files" / "localllm_capi.h"
TEXTGEN_HEADER = REPO / "fixtures" / "textgen" / "src" / "textgen.h"


def roles(header: Path, op: str, config: VerifyConfig | None = None) -> dict[str, str | None]:
    bound = infer(read_api(header), config).ops[op]
    return {p.name: (f"value={p.value!r}" if p.role == "value" else p.role) for p in bound.params}


def test_first_fixture_binds_every_operation() -> None:
    binding = infer(read_api(LOCALLLM / "custom_files" / "localllm_capi.h"))
    assert binding.prefix == "localllm_"
    assert {op: b.function.name for op, b in binding.ops.items() if op in ("generate", "generate_parallel")} == {
        "generate": "localllm_generate", "generate_parallel": "localllm_generate_parallel"}  # fmt: skip
    assert roles(LOCALLLM / "custom_files" / "localllm_capi.h", "generate") == {
        "ctx": "context", "prompt": "prompt", "params": "sampling", "result_out": "text_out",
        "error_message": "error_out"}  # fmt: skip
    # the model_load_safe variant is not mistaken for model_load
    assert binding.ops["model_load"].function.name == "localllm_model_load"


def test_error_out_parameter_token_ids_and_separate_sampling_arguments() -> None:
    generate = roles(NEXT_HEADER, "generate")
    assert generate == {
        "ctx": "context", "tokens": "tokens_in", "n_tokens": "n_tokens_in", "max_tokens": "max_tokens",
        "top_k": "top_k", "top_p": "top_p", "temperature": "temperature", "repeat_last_n": "repeat_last_n",
        "penalty_repeat": "repeat_penalty", "seed": "seed", "result_out": "text_out", "error_message": "error_out",
    }  # fmt: skip
    assert roles(NEXT_HEADER, "backend_init") == {"error_message": "error_out"}
    assert roles(NEXT_HEADER, "context_create")["verbosity"] == "value=0"
    parallel = infer(read_api(NEXT_HEADER)).ops["generate_parallel"]
    assert parallel.fields["penalty_repeat"] == "repeat_penalty" and parallel.has("results_out")


def test_plain_c_opaque_handles_buffers_and_last_error() -> None:
    binding = infer(read_api(TEXTGEN_HEADER))
    assert binding.prefix == "tg_"
    names = {op: b.function.name for op, b in binding.ops.items()}
    assert names["model_load"] == "tg_engine_open" and names["context_create"] == "tg_session_open"
    assert names["generate_parallel"] == "tg_generate_batch" and names["last_error"] == "tg_last_error"
    assert names["llama_context"] == "tg_session_llama"  # returns struct llama_context * from the handle
    assert binding.ops["model_load"].success == "nonnull"
    assert binding.ops["tokenize"].success == "nonnegative"
    assert roles(TEXTGEN_HEADER, "generate") == {"session": "context", "prompt": "prompt", "opts": "sampling",
                                                 "buf": "text_buffer", "buf_size": "text_buffer_size"}  # fmt: skip
    assert roles(TEXTGEN_HEADER, "context_create") == {"engine": "model", "ctx_size": "n_ctx",
                                                       "n_parallel": "n_seq_max", "threads": "n_threads"}  # fmt: skip
    assert binding.ops["generate"].fields == {"max_new_tokens": "max_tokens", "temp": "temperature",
                                              "top_k": "top_k", "top_p": "top_p", "repeat_penalty": "repeat_penalty",
                                              "seed": "seed"}  # fmt: skip


ODD_HEADER = """\
#include <stddef.h>
#include <stdint.h>
#define ODD_API __attribute__((visibility("default")))
typedef struct odd_model odd_model;
typedef struct odd_ctx odd_ctx;
ODD_API odd_model * odd_model_load(const char * path, int gpu_layers);
ODD_API void odd_model_free(odd_model * m);
ODD_API odd_ctx * odd_context_create(odd_model * m, int n_ctx, int lanes);
ODD_API void odd_context_free(odd_ctx * c);
ODD_API int odd_tokenize(odd_model * m, const char * text, int32_t * out, int capacity);
ODD_API int odd_say(odd_ctx * c, const char * prompt, int n, char * out, size_t out_size);
ODD_API int odd_generate_parallel(odd_ctx * c, const char ** prompts, int n_prompts, int n, char ** outputs);
"""


def test_a_header_that_cannot_be_bound_gets_one_message_with_the_config_to_add(tmp_path: Path) -> None:
    header = tmp_path / "odd.h"
    header.write_text(ODD_HEADER)
    with pytest.raises(BindingIncomplete) as info:
        infer(read_api(header))
    message = str(info.value)
    assert "Found: model_load -> odd_model_load" in message  # what was found
    assert "generate: not found" in message  # what is missing
    assert "context_create (odd_context_create): parameter int lanes: role not decided" in message
    assert "\n[verify]\n" in message and '\ngenerate.function = "<function name>"' in message  # lines to add
    assert 'context_create.params.lanes = "<role>"' in message


def test_the_config_completes_what_inference_cannot_decide(tmp_path: Path) -> None:
    header = tmp_path / "odd.h"
    header.write_text(ODD_HEADER)
    config = VerifyConfig.from_table({
        "generate": {"function": "odd_say", "params": {"n": "max_tokens"}},
        "context_create": {"params": {"lanes": "n_seq_max"}},
        "generate_parallel": {"params": {"n": "max_tokens"}},
    })  # fmt: skip
    binding = infer(read_api(header), config)
    assert binding.ops["generate"].function.name == "odd_say"
    rows = {row[0]: row for row in binding.table()}
    assert rows["generate"][3] == "configured" and rows["model_load"][3] == "inferred"
    assert "lanes: n_seq_max" in rows["context_create"][2]


@pytest.mark.parametrize(("table", "complaint"), [
    ({"generat": "x"}, "unknown operation 'generat'"),
    ({"generate": {"function": "x", "param": {}}}, "unknown key(s) param"),
    ({"generate": {"params": {"n": "speed"}}}, "unknown role 'speed'"),
    ({"generate": {"success": "maybe"}}, "'maybe' is not one of"),
    ({"adapter": 3}, "adapter must be a string"),
])  # fmt: skip
def test_verify_config_is_validated(table: dict, complaint: str) -> None:
    with pytest.raises(VerifyConfigError, match=re.escape(complaint)):
        VerifyConfig.from_table(table)


def test_configured_function_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(BindingIncomplete, match="no such function"):
        infer(read_api(NEXT_HEADER), VerifyConfig.from_table({"generate": "localllm_generate_v2"}))


def test_two_candidate_headers_ask_for_header_in_one_line(tmp_path: Path) -> None:
    for name in ("a.h", "b.h"):
        (tmp_path / name).write_text("#define X_API\nX_API int x_init(void);\n")
    with pytest.raises(BindingError) as info:
        find_header(tmp_path)
    assert "\n" not in str(info.value) and "--header" in str(info.value) and "`header`" in str(info.value)


def test_unreadable_header_is_a_header_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h"
    bad.write_text("int broken(;\n")
    with pytest.raises(HeaderError, match="bad.h:1"):
        read_api(bad)


def test_verify_command_stops_before_any_check_when_the_header_cannot_be_bound(tmp_path: Path) -> None:
    header = tmp_path / "odd.h"
    header.write_text(ODD_HEADER)
    library = tmp_path / "libodd.so"
    library.write_bytes(b"\x7fELF not loaded: binding fails first")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "verify", "--lib", str(library), "--header",
                           str(header), "--model", str(model)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot bind the C API" in proc.stderr
    assert "verifying" not in proc.stderr  # no check started


def test_verify_imports_nothing_from_migrate() -> None:
    offenders = [f"{path.name}:{n}" for path in sorted((REPO / "verify").glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.match(r"\s*(from|import)\s+migrate\b", line)]  # fmt: skip
    assert offenders == []


def test_run_on_a_tree_with_two_candidate_headers_asks_for_header_without_a_traceback(tmp_path: Path) -> None:
    tree = tmp_path / "two-headers"
    tree.mkdir()
    for name in ("a.h", "b.h"):
        (tree / name).write_text("#define X_API\nX_API int x_init(void);\n")
    (tree / "shim.c").write_text('#include "llama.h"\n#include "a.h"\nint x_init(void) { return 0; }\n')
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "run", str(tree), "--quiet", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot pick the C API header" in lines[0] and "--header" in lines[0], lines
