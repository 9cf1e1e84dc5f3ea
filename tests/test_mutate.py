"""Mutation testing: the operators on a small C file (libclang, no build), the config's equivalents, and one small
real run (`migrate mutate` on fixtures/textgen at b5415: three mutants, three checks)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from migrate.cli import main as migrate_main
from migrate.config import ConfigError, load_config
from tests.conftest import REPO
from verify import mutate
from verify import mutate_realistic as realistic
from verify.clangsetup import system_args

SMALL_C = b"""\
struct ctx_params { int n_threads; int n_batch; };
struct mem;
void llama_memory_clear(struct mem * m, int data);
int llama_decode(int pos, int n_tokens);
static int sample_next(int token) { return token + 1; }

static int generate(struct mem * m, int n_ctx, int n_prompt) {
    struct ctx_params params;
    params.n_threads = 4;
    llama_memory_clear(m, 1);
    int n_past = n_prompt;
    for (int i = 0; i < 8; ++i) {
        if (n_past >= n_ctx) {
            break;
        }
        llama_decode(n_past, 1);
        n_past = sample_next(n_past);
    }
    return params.n_threads;
}

int api_generate(struct mem * m, int n_ctx) { return generate(m, n_ctx, 3); }
int api_unbound(int x) { return x == 2; }
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, mutate.MutantSet]:
    path = tmp_path_factory.mktemp("small") / "small.c"
    path.write_bytes(SMALL_C)
    found = mutate.make_mutants({path: "small.c"}, lambda p: ["-x", "c", "-std=c11", *system_args()],
                                {"generate": "api_generate"})  # fmt: skip
    return path, found


def test_every_operator_finds_its_site(small: tuple[Path, mutate.MutantSet]) -> None:
    _, found = small
    assert not found.problems
    by_kind = {m.kind: m for m in found.mutants}
    assert set(by_kind) == set(mutate.ORIGINAL_KINDS)  # the realistic families: SMALL_CPP below
    descriptions = {(m.kind, m.description) for m in found.mutants}
    assert ("comparison", "`>=` → `>`") in descriptions
    assert ("memory_call", "`llama_memory_clear(m, 1)` → `(void)0`") in descriptions
    assert ("params_field", "`params.n_threads = 4` → `(void)0`") in descriptions
    assert ("loop_exit", "`break` → `(void)0`") in descriptions
    assert ("position", "`n_past` → `(n_past) + 1`") in descriptions  # llama_decode's pos argument
    assert ("constant", "`8` → `9`") in descriptions
    assert ("argument_swap", "`n_past, 1` → `1, n_past`") in descriptions


def test_only_reached_functions_are_mutated(small: tuple[Path, mutate.MutantSet]) -> None:
    _, found = small
    assert set(found.reached["small.c"]) == {"api_generate", "generate", "sample_next"}
    assert found.not_reached["small.c"] == ["api_unbound"]
    assert all(m.function != "api_unbound" for m in found.mutants)
    assert found.operations_of["sample_next"] == ["generate"]


def test_mutants_apply_and_have_stable_ids(small: tuple[Path, mutate.MutantSet]) -> None:
    path, found = small
    swap = next(m for m in found.mutants if m.kind == "comparison" and m.description == "`>=` → `>`")
    assert b"if (n_past > n_ctx)" in swap.apply(path.read_bytes())
    assert swap.id == f"small.c:generate:{swap.line}:{swap.column}:comparison:>"
    assert len({m.id for m in found.mutants}) == len(found.mutants)
    mark = mutate.equivalents([{"id": "small.c:sample_next:*", "reason": "r"}])[0]
    assert {m.function for m in found.mutants if mark.matches(m)} == {"sample_next"}
    assert mutate.sample(found.mutants, 3, seed=1) == mutate.sample(found.mutants, 3, seed=1)
    assert len(mutate.sample(found.mutants, 3)) == 3 and mutate.sample(found.mutants, None) == found.mutants


def test_rescore_marks_survivors_and_flags_wrong_marks(small: tuple[Path, mutate.MutantSet]) -> None:
    _, found = small
    survivor, killed = found.mutants[0], found.mutants[1]
    report = mutate.MutationReport("small", "b5415", len(found.mutants),
                                   [mutate.MutantResult(survivor, mutate.SURVIVED, nearest="generate"),
                                    mutate.MutantResult(killed, mutate.KILLED, "generate", "failed")],
                                   found.reached, found.not_reached, [], 1.0)  # fmt: skip
    assert report.score == 0.5
    marks = mutate.equivalents([{"id": survivor.id, "reason": "same"}, {"id": killed.id, "reason": "wrong"}])
    again, wrong = mutate.rescore(json.loads(json.dumps(report.to_json(), default=str)), marks)
    assert [r.status for r in again.results] == [mutate.EQUIVALENT, mutate.KILLED]
    assert again.score == 1.0 and again.results[0].reason == "same"
    assert wrong == [f"{killed.id}: marked equivalent (wrong) but killed by generate"]
    assert "| killed | 1 |" in mutate.markdown(again) and "same" in mutate.markdown(again)


def test_config_takes_equivalent_mutants_and_refuses_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text('mutants = [{ id = "a.c:f:*", reason = "dead code" }]\n')
    assert load_config(tmp_path).mutants == ({"id": "a.c:f:*", "reason": "dead code"},)
    for bad in ('mutants = ["a.c:f:*"]', 'mutants = [{ id = "a" }]', 'mutants = { id = "a", reason = "b" }'):
        (tmp_path / "llama-migrate.toml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match="mutants must be a list of tables"):
            load_config(tmp_path)


@pytest.mark.slow
def test_a_small_real_run_on_plain_c(tmp_path: Path) -> None:
    out = tmp_path / "mutants.json"
    code = migrate_main(["mutate", str(REPO / "fixtures" / "textgen"), "--kinds", "memory_call", "--max", "3",
                         "--checks", "generate,memory_cleared,state_across_calls", "--json", str(out),
                         "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["run"] == 3 and data["generated"] >= 3
    assert {r["mutant"]["kind"] for r in data["results"]} == {"memory_call"}
    assert all(r["status"] in (mutate.KILLED, mutate.SURVIVED) for r in data["results"]), data["results"]
    assert data["killed"] >= 1 and data["score"] == data["killed"] / data["scored"]
    survivors = [r for r in data["results"] if r["status"] == mutate.SURVIVED]
    assert all(r["nearest"] for r in survivors)
    report = next(tmp_path.glob("textgen-mutants-*.md")).read_text()
    assert "## Mutation score" in report and "### Survivors" in report


# --- the realistic families (verify/mutate_realistic.py): a snippet in, the expected mutants out -------------------

SMALL_CPP = b"""\
namespace std {
template <class C> struct basic_string {
    basic_string();
    basic_string(const C * s);
    const C * c_str() const;
    C & operator[](unsigned long i);
};
using string = basic_string<char>;
}
typedef int llama_pos;
struct llama_context;
struct llama_batch { int n_tokens; };
struct ctx_params { int n_ctx; float temp; };
struct sampling { float temperature; float top_p; };
struct holder { void reset(); };
int llama_tokenize(const char * text, int text_len, int * tokens, int n_tokens_max, bool add_special, bool parse);
int llama_decode(llama_context * ctx, llama_batch batch);
void llama_batch_free(llama_batch batch);

static std::string g_error;
static char * dup_cstring(const std::string & s) { return nullptr; }

static void set_error(const char ** out, const std::string & msg) {
    g_error = msg;
    *out = g_error.c_str();
}

int api_run(llama_context * ctx, const char * text, int n_ctx, int n_threads, bool add_special, const sampling & s,
            char ** out, const char ** err) {
    ctx_params p;
    p.n_ctx = n_ctx;
    p.temp = s.temperature;
    holder h;
    int tokens[8];
    int n = llama_tokenize(text, 4, tokens, 8, add_special, true);
    llama_batch batch = {n};
    if (llama_decode(ctx, batch) != 0) {
        llama_batch_free(batch);
        h.reset();
        set_error(err, "decode failed");
        return -1;
    }
    llama_batch_free(batch);
    std::string text_out;
    *out = dup_cstring(text_out);
    return p.n_ctx + n_threads;
}
"""

EXPECTED_REALISTIC = {
    ("bool_argument", "`add_special` → `!add_special`"), ("bool_argument", "`true` → `false`"),
    ("api_argument_swap", "`4, tokens, 8` → `8, tokens, 4`"),
    ("field_source", "`n_ctx` → `n_threads`"), ("field_source", "`s.temperature` → `s.top_p`"),
    ("cleanup_drop", "`llama_batch_free(batch)` → `(void)0`"), ("cleanup_drop", "`h.reset()` → `(void)0`"),
    ("dangling_pointer", "`dup_cstring(text_out)` → `&(text_out)[0]`"), ("dangling_pointer", "`g_error` → `msg`"),
}  # fmt: skip


@pytest.fixture(scope="module")
def small_cpp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, mutate.MutantSet]:
    path = tmp_path_factory.mktemp("small_cpp") / "small.cpp"
    path.write_bytes(SMALL_CPP)
    found = mutate.make_mutants({path: "small.cpp"}, lambda p: ["-x", "c++", "-std=c++17", *system_args()],
                                {"run": "api_run"}, kinds=tuple(realistic.KINDS))  # fmt: skip
    return path, found


def test_each_realistic_family_makes_exactly_its_mutants(small_cpp: tuple[Path, mutate.MutantSet]) -> None:
    _, found = small_cpp
    assert not found.problems
    made = [(m.kind, m.description) for m in found.mutants]
    assert set(made) == EXPECTED_REALISTIC
    # the two frees of `batch`: the one on the failing branch, and the other since the first releases it too
    assert made.count(("cleanup_drop", "`llama_batch_free(batch)` → `(void)0`")) == 2
    assert len(made) == len(EXPECTED_REALISTIC) + 1


def test_realistic_mutants_apply_to_the_source(small_cpp: tuple[Path, mutate.MutantSet]) -> None:
    path, found = small_cpp
    source = path.read_bytes()
    after = {m.description: m.apply(source) for m in found.mutants}
    assert b"llama_tokenize(text, 8, tokens, 4, add_special, true)" in after["`4, tokens, 8` → `8, tokens, 4`"]
    assert b"p.n_ctx = n_threads;" in after["`n_ctx` → `n_threads`"]
    assert b"*out = msg.c_str();" in after["`g_error` → `msg`"]
    assert b"*out = &(text_out)[0];" in after["`dup_cstring(text_out)` → `&(text_out)[0]`"]
    assert b"llama_tokenize(text, 4, tokens, 8, !add_special, true)" in after["`add_special` → `!add_special`"]


def test_a_free_on_the_only_path_is_not_dropped(tmp_path: Path) -> None:
    """`cleanup_drop` is about one path: a free the whole scope runs (the only release of its object) is left."""
    path = tmp_path / "one.cpp"
    path.write_bytes(b"struct llama_batch { int n; };\\nvoid llama_batch_free(llama_batch b);\\n"
                     b"int api_one(int n) {\\n    llama_batch batch = {n};\\n    if (n > 0) {\\n"
                     b"        llama_batch other = {n};\\n        llama_batch_free(other);\\n    }\\n"
                     b"    llama_batch_free(batch);\\n    return n;\\n}\\n")  # fmt: skip
    found = mutate.make_mutants({path: "one.cpp"}, lambda p: ["-x", "c++", *system_args()], {"one": "api_one"},
                                kinds=("cleanup_drop",))  # fmt: skip
    assert found.mutants == []


def test_the_original_operators_sample_is_unchanged_by_the_new_families(
        small_cpp: tuple[Path, mutate.MutantSet], small: tuple[Path, mutate.MutantSet]) -> None:  # fmt: skip
    """The seeded sample of the original seven operators is drawn as before the families existed (the figure of
    record stays comparable); each realistic family is drawn as its own stratum."""
    _, original = small
    _, new = small_cpp
    both = sorted([*original.mutants, *new.mutants], key=lambda m: (m.file, m.start, m.kind))
    drawn = mutate.sample(both, 3, seed=1)
    before = [original.mutants[i] for i in sorted(random.Random(1).sample(range(len(original.mutants)), 3))]
    assert [m for m in drawn if m.kind in mutate.ORIGINAL_KINDS] == before
    for kind in realistic.KINDS:
        assert sum(1 for m in drawn if m.kind == kind) == min(3, sum(1 for m in new.mutants if m.kind == kind))


# one mutant of each realistic family in the localllm fixture, and a check that kills it
ONE_PER_FAMILY = {
    "bool_argument": "custom_files/localllm_capi.cpp:localllm_generate:705:*:bool_argument:false",
    "api_argument_swap": "custom_files/localllm_capi.cpp:localllm_generate:657:*:api_argument_swap:*",
    "field_source": "custom_files/localllm_capi.cpp:localllm_generate_parallel:921:*:field_source:first_seq",
    "cleanup_drop": "custom_files/localllm_capi.cpp:localllm_generate:663:*:cleanup_drop:*",
    "dangling_pointer": "custom_files/localllm_capi.cpp:localllm_generate:715:*:dangling_pointer:*",
}  # fmt: skip


@pytest.mark.slow
def test_a_real_run_kills_one_mutant_of_each_realistic_family(tmp_path: Path) -> None:
    """Built and checked for real (b5415, the shim rebuilt per mutant): a logits flag flipped, a batch sized by the
    wrong argument, every parallel slot's prompt index set from first_seq, the failure path's batch free dropped,
    the result pointing into a local string — each is caught (the dropped free only by
    failed_calls_release_memory)."""
    out = tmp_path / "mutants.json"
    code = migrate_main(["mutate", str(REPO / "fixtures" / "localllm"), "--only", ",".join(ONE_PER_FAMILY.values()),
                         "--checks", "generate,generate_parallel,failed_calls_release_memory", "--timeout", "120",
                         "--json", str(out),
                         "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    by_kind = {r["mutant"]["kind"]: r for r in data["results"]}
    assert set(by_kind) == set(ONE_PER_FAMILY), data["results"]
    assert all(r["status"] == mutate.KILLED for r in by_kind.values()), {k: r["status"] for k, r in by_kind.items()}
    assert by_kind["cleanup_drop"]["check"] == "failed_calls_release_memory"
