"""`migrate rules mine` (issue 23): anti-unification of real before/after pairs, the pairing of two versions of a
function, and one mining run on the cached llama.cpp trees (b5415 → b7836) whose rules load with the schema and
whose cases the real engine reproduces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrate.apidiff.surface import FunctionDecl
from migrate.mine import MineResult, render_file
from migrate.mine.corpus import Pair, PairFate, Side, Use, functions_in, pair_uses, split_args
from migrate.mine.rulefile import OptionNames, build_rule
from migrate.mine.unify import (
    FixKind,
    Known,
    Shape,
    fix_for,
    free_names,
    generalise,
    literal_text,
    option_value,
    reproduces,
    shown,
    template_of,
)
from migrate.rewrite.rules import load_rules
from migrate.rewrite.tokens import tokenize

# The new API as far as these pairs need it (b7836's llama.h and common.h declare these).
KNOWN = Known(
    names={"llama_memory_seq_rm", "llama_memory_clear", "llama_get_memory", "llama_memory_seq_cp",
           "common_cpu_get_num_math", "llama_sampler_init_penalties", "llama_vocab_n_tokens"},
    members=set(),
    functions_at_b={"llama_memory_seq_rm", "llama_memory_clear", "llama_get_memory", "llama_memory_seq_cp",
                    "common_cpu_get_num_math", "llama_sampler_init_penalties", "llama_vocab_n_tokens"},
    functions_at_a={"llama_kv_self_seq_rm", "llama_kv_self_clear", "llama_kv_self_seq_cp", "cpu_get_num_math",
                    "llama_sampler_init_penalties", "llama_vocab_n_tokens", "common_log_set_colors"},
    arity_at_a={"llama_kv_self_seq_rm": 4, "llama_kv_self_clear": 1, "cpu_get_num_math": 0,
                "llama_sampler_init_penalties": 4, "common_log_set_colors": 2, "llama_kv_self_seq_cp": 5},
    arity_at_b={"llama_memory_seq_rm": 4, "llama_memory_clear": 2, "common_cpu_get_num_math": 0,
                "llama_sampler_init_penalties": 5, "common_log_set_colors": 2, "llama_memory_seq_cp": 5},
)  # fmt: skip


def _tokens(code: str) -> tuple[str, ...]:
    return tuple(t.name for t in tokenize(code.encode()))


def _pair(before: str, after: str, line: int = 1) -> Pair:
    """A paired use as corpus.py makes it, from the call texts of a real migration."""
    tokens = tokenize(before.encode())
    close = len(tokens) - 1
    use = Use(tokens[0].name, Path("a.cpp"), line, "main", before, split_args(tokens, 1, close))
    return Pair(use, PairFate.PAIRED, _tokens(after), after, Path("b.cpp"), line)


# --- anti-unification -------------------------------------------------------------------------------------------


def test_holes_are_whole_arguments_in_order() -> None:
    # examples/lookahead/lookahead.cpp:448 at b5415 → :439 at b7836 (handle `mem` inlined)
    pair = _pair("llama_kv_self_seq_rm (ctx, seq_id_best, -1, -1)",
                 "llama_memory_seq_rm(llama_get_memory(ctx), seq_id_best, -1, -1)")  # fmt: skip
    template = template_of(pair.use.args, pair.after or ())
    assert shown(template) == "llama_memory_seq_rm(llama_get_memory($0), $1, $2, $3)"


def test_an_argument_inside_a_longer_one_is_not_a_hole() -> None:
    # `ctx` is argument 0, but `ctx.lctx` in the after-call is not that argument
    pair = _pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx.lctx), true)")
    assert shown(template_of(pair.use.args, pair.after or ())) == "llama_memory_clear(llama_get_memory(ctx.lctx), true)"


def test_pairs_with_one_shape_make_a_memory_call_rule_that_reproduces_them() -> None:
    pairs = [
        _pair("llama_kv_self_seq_rm(ctx, 0, n_past, -1)", "llama_memory_seq_rm(llama_get_memory(ctx), 0, n_past, -1)"),
        _pair("llama_kv_self_seq_rm(ctx_tgt, s_keep, n_past_tgt, -1)",
              "llama_memory_seq_rm(llama_get_memory(ctx_tgt), s_keep, n_past_tgt, -1)"),
    ]  # fmt: skip
    gen = generalise("llama_kv_self_seq_rm", pairs, KNOWN)
    assert gen.shape == Shape.RULE and len(gen.used) == 2
    fix = fix_for(gen.template or (), 4)
    assert (fix.kind, fix.text) == (FixKind.MEMORY_CALL, "llama_memory_seq_rm({mem}, {rest})")
    assert all(reproduces(fix, p) for p in pairs)


def test_a_rename_without_arguments_is_a_call_rewrite() -> None:
    # node-llama-cpp's addon.cpp:51 (3.15.1) → :73 (3.20.0)
    gen = generalise("cpu_get_num_math", [_pair("cpu_get_num_math()", "common_cpu_get_num_math()")], KNOWN)
    fix = fix_for(gen.template or (), 0)
    assert gen.shape == Shape.RULE
    assert (fix.kind, fix.text) == (FixKind.CALL_REWRITE, "common_cpu_get_num_math()")


def test_two_shapes_of_different_structure_conflict() -> None:
    # one argument a literal here, an expression there: not one shape with a parameter
    pairs = [_pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx), true)"),
             _pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx), true)"),
             _pair("llama_kv_self_clear(ctx)",
                   "llama_memory_clear(llama_get_memory(ctx), llama_vocab_n_tokens(ctx) > 0)")]  # fmt: skip
    gen = generalise("llama_kv_self_clear", pairs, KNOWN)
    assert gen.shape == Shape.CONFLICT and gen.choice is None
    assert [(shown(t), n) for t, n in gen.shapes] == [
        ("llama_memory_clear(llama_get_memory($0), true)", 2),
        ("llama_memory_clear(llama_get_memory($0), llama_vocab_n_tokens($0) > 0)", 1)]  # fmt: skip
    rule = build_rule(gen, OLD_CLEAR, _cite, set(), "b7836", OptionNames({"llama_memory_clear": NEW_CLEAR}))
    assert rule is not None and rule.data["kind"] == "manual_call" and rule.option is None
    assert "more than one way" in rule.data["guidance"] and "options" not in rule.data


def test_literals_in_two_arguments_conflict() -> None:
    # two arguments differ (values chosen together): no single option stands for them
    pairs = [_pair("llama_kv_self_clear(ctx)", "llama_memory_seq_rm(llama_get_memory(ctx), -1, 0, -1)"),
             _pair("llama_kv_self_clear(ctx)", "llama_memory_seq_rm(llama_get_memory(ctx), 0, 1, -1)")]  # fmt: skip
    assert generalise("llama_kv_self_clear", pairs, KNOWN).shape == Shape.CONFLICT


# --- a literal argument as an option ---------------------------------------------------------------------------

# The declarations as b5415's and b7836's llama.h have them (the option is named after B's parameter).
OLD_CLEAR = FunctionDecl("llama_kv_self_clear", "void llama_kv_self_clear(struct llama_context * ctx)", "void",
                         ["struct llama_context *"], ["ctx"], [None], False, False, None, "include/llama.h", 1)
NEW_CLEAR = FunctionDecl("llama_memory_clear", "void llama_memory_clear(llama_memory_t mem, bool data)", "void",
                         ["llama_memory_t", "bool"], ["mem", "data"], [None, None], False, False, None,
                         "include/llama.h", 2)  # fmt: skip


def _cite(path: Path) -> str:
    return f"b5415:tools/{path.name}" if path.name == "a.cpp" else f"b7836:tools/{path.name}"


def _clears(trues: int, falses: int) -> list[Pair]:
    """llama_kv_self_clear(ctx) migrated with `true` in `trues` places, `false` in `falses` (as tools/perplexity
    and tools/llama-bench did at b7836), each at its own line."""
    pairs = [_pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx), true)", 10 + i)
             for i in range(trues)]  # fmt: skip
    return pairs + [_pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx), false)", 50 + i)
                    for i in range(falses)]  # fmt: skip


def test_shapes_differing_in_one_literal_make_an_option_defaulting_to_the_majority(tmp_path: Path) -> None:
    pairs = _clears(3, 1)
    gen = generalise("llama_kv_self_clear", pairs, KNOWN)
    assert gen.shape == Shape.OPTION and gen.choice is not None
    assert (gen.choice.slot, gen.choice.counts, gen.choice.default) == (1, (("true", 3), ("false", 1)), "true")
    names = OptionNames({"llama_memory_clear": NEW_CLEAR}, {"hoist_memory", "llama_memory_clear_data"})
    rule = build_rule(gen, OLD_CLEAR, _cite, set(), "b7836", names)
    assert rule is not None and rule.option is not None and rule.fix is not None
    name = rule.option.name
    assert name == "llama_memory_clear_data_2"  # named after B's parameter `data`, not a name the file has
    assert (rule.data["kind"], rule.data["fix"]) == ("memory_call", f"llama_memory_clear({{mem}}, {{{name}}})")
    assert rule.data["options"] == [name] and rule.option.spec["default"] is True
    # each pair reproduced with the option set to its own literal
    assert all(reproduces(rule.fix, p, {name: rule.option.literal(p)}) for p in pairs)
    assert not reproduces(rule.fix, pairs[-1], {name: "true"})
    decisions = rule.option.spec["decisions"]
    assert set(decisions) == {True, False}
    assert "3 of 4" in decisions[True] and "the default" in decisions[True]
    assert "1 of 4" in decisions[False] and "b5415:tools/a.cpp:50 → b7836:tools/b.cpp:50" in decisions[False]
    assert "true in 3 of 4; false in 1 of 4" in rule.option.spec["description"] and "`data`" in rule.option.spec[
        "description"]  # fmt: skip
    cases = rule.data["tests"]["invalid"]
    assert [c.get("options") for c in cases] == [None, {name: False}]  # one case per value, options where not default
    assert "false);" in cases[1]["output"] and "true);" in cases[0]["output"]
    assert [p["option"] for p in rule.data["provenance"]] == [f"{name}=true"] * 3 + [f"{name}=false"]
    # the file loads with the schema, the option declared with its decisions, the cases with their options
    path = tmp_path / "mined.yaml"
    path.write_text(render_file(MineResult("b5421", "b7785", [rule]), []))
    ruleset = load_rules(path)
    assert ruleset.options[name].default is True and ruleset.options[name].decisions[False] == " ".join(
        decisions[False].split())  # fmt: skip
    assert [c.options for c in ruleset.by_id(rule.data["id"]).invalid] == [{}, {name: False}]


def test_a_tie_between_literals_stays_manual_saying_so() -> None:
    gen = generalise("llama_kv_self_clear", _clears(2, 2), KNOWN)
    assert gen.shape == Shape.TIE and gen.choice is not None and gen.choice.tie
    rule = build_rule(gen, OLD_CLEAR, _cite, set(), "b7836", OptionNames({"llama_memory_clear": NEW_CLEAR}))
    assert rule is not None and rule.data["kind"] == "manual_call" and rule.option is None
    assert "true in 2 use(s), false in 2 use(s)" in rule.data["description"] and "a tie" in rule.data["description"]
    assert "options" not in rule.data


def test_number_and_null_literals() -> None:
    assert [literal_text(tuple(t)) for t in (["-", "1"], ["1.0f"], ["nullptr"], ["NULL"], ["n"], ["-", "n"])] == [
        "-1", "1.0f", "nullptr", "NULL", None, None]  # fmt: skip
    pairs = [_pair("llama_kv_self_clear(ctx)", "llama_memory_seq_rm(llama_get_memory(ctx), -1, 0, -1)", 1),
             _pair("llama_kv_self_clear(ctx)", "llama_memory_seq_rm(llama_get_memory(ctx), -1, 0, -1)", 2),
             _pair("llama_kv_self_clear(ctx)", "llama_memory_seq_rm(llama_get_memory(ctx), 0, 0, -1)", 3)]  # fmt: skip
    gen = generalise("llama_kv_self_clear", pairs, KNOWN)
    assert gen.shape == Shape.OPTION and gen.choice is not None and gen.choice.counts == (("-1", 2), ("0", 1))
    assert option_value("-1", gen.choice) == -1  # integers stay integers (the option takes --option x=0)


def test_a_value_of_the_surrounding_code_makes_a_proposal_not_a_rule() -> None:
    # node-llama-cpp's AddonSampler.cpp: the new leading argument reads `model->vocab`
    pair = _pair("llama_sampler_init_penalties(repeatPenaltyMaxTokens, repeatPenalty, freq, presence)",
                 "llama_sampler_init_penalties(llama_vocab_n_tokens(model->vocab), repeatPenaltyMaxTokens, "
                 "repeatPenalty, freq, presence)")  # fmt: skip
    gen = generalise("llama_sampler_init_penalties", [pair], KNOWN)
    assert gen.shape == Shape.CONTEXT
    assert gen.context[0][2] == ["model", "vocab"]  # the addon's own object and member
    assert shown(gen.shapes[0][0]) == "llama_sampler_init_penalties(llama_vocab_n_tokens(model->vocab), $0, $1, $2, $3)"


def test_a_renamed_variable_is_context_dependent() -> None:
    # common/speculative.cpp:176: `ctx` became `ctx_dft` in the same function
    pair = _pair("llama_kv_self_clear(ctx)", "llama_memory_clear(llama_get_memory(ctx_dft), false)")
    assert generalise("llama_kv_self_clear", [pair], KNOWN).shape == Shape.CONTEXT


def test_dropping_an_argument_the_new_function_still_takes_is_not_a_rule() -> None:
    # common/arg.cpp: every pair passed `true`, which is no reason to drop what another caller passes
    pair = _pair("common_log_set_colors(common_log_main(), true)",
                 "common_log_set_colors(common_log_main(), LOG_COLORS_ENABLED)")  # fmt: skip
    known = Known(KNOWN.names | {"LOG_COLORS_ENABLED", "common_log_set_colors", "common_log_main"}, set(),
                  KNOWN.functions_at_b | {"common_log_set_colors"}, KNOWN.functions_at_a, KNOWN.arity_at_a,
                  KNOWN.arity_at_b)  # fmt: skip
    assert generalise("common_log_set_colors", [pair], known).shape == Shape.DROPS


def test_a_call_the_old_code_already_made_is_not_a_pair() -> None:
    # a diff that lines a removed call up with another existing call (examples/retrieval at b5415 → b7836)
    pair = _pair("llama_kv_self_clear(ctx)", "llama_vocab_n_tokens(ctx)")
    gen = generalise("llama_kv_self_clear", [pair], KNOWN)
    assert gen.shape == Shape.NONE and "declared before" in gen.excluded[0].reason


def test_free_names_objects_and_members() -> None:
    template = template_of(((("ctx",)),), _tokens("g(llama_get_memory(ctx), slot.id)"))
    assert free_names(template, KNOWN.names, {"id"}) == ["g", "slot"]


# --- pairing two versions of a function --------------------------------------------------------------------------

OLD = """\
struct server_context {
    void update(llama_context * ctx, int n_keep, int n_discard) {
        llama_kv_self_seq_rm (ctx, 0, n_keep, n_keep + n_discard);
        const bool first = llama_kv_self_seq_pos_max(ctx, 0) == 0;
        llama_kv_self_seq_cp(ctx, 0, 1, -1, -1);
    }
};
AddonContext::AddonContext(int a) : n(a), m{a} {
    llama_kv_self_clear(ctx);
}
"""
NEW = """\
struct server_context {
    void update(llama_context * ctx, int n_keep, int n_discard) {
        auto * mem = llama_get_memory(ctx);
        llama_memory_seq_rm(mem, 0, n_keep, n_keep + n_discard);
        const bool first = llama_memory_seq_pos_max(mem, 0) == -1;
        llama_kv_self_seq_cp(ctx, 0, 1, -1, -1);
    }
};
AddonContext::AddonContext(int a) : n(a), m{a} {
}
"""


def test_functions_are_found_with_their_qualified_names(tmp_path: Path) -> None:
    source = tmp_path / "a.cpp"
    source.write_text(OLD + "void f() { auto g = [](int x) { return x; }; if (g(1)) { } }\n"
                      "AddonModel::AddonModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonModel>(info) {\n"
                      "}\n")  # fmt: skip
    assert [(f.name, f.line) for f in functions_in(source)] == [("update", 2), ("AddonContext::AddonContext", 8),
                                                                 ("f", 11), ("AddonModel::AddonModel", 12)]


def test_pairs_inline_the_hoisted_handle_and_flag_changed_surroundings(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "s.cpp").write_text(OLD)
    (tmp_path / "b" / "s.cpp").write_text(NEW)
    apis = {"llama_kv_self_seq_rm", "llama_kv_self_seq_pos_max", "llama_kv_self_seq_cp", "llama_kv_self_clear"}
    pairs = {p.use.api: p for p in pair_uses(Side([tmp_path / "a"]), Side([tmp_path / "b"]), apis)}
    rm = pairs["llama_kv_self_seq_rm"]
    assert rm.fate == PairFate.PAIRED and rm.b_line == 4
    assert rm.after_text == "llama_memory_seq_rm(llama_get_memory(ctx), 0, n_keep, n_keep + n_discard)"
    assert rm.inlined == ("mem = llama_get_memory ( ctx )",) and not rm.surroundings
    assert "== 0" in pairs["llama_kv_self_seq_pos_max"].surroundings  # `== 0` became `== -1`
    assert pairs["llama_kv_self_seq_cp"].fate == PairFate.UNCHANGED
    assert pairs["llama_kv_self_clear"].fate == PairFate.REMOVED


# --- the cached trees ---------------------------------------------------------------------------------------------


def _trees():  # type: ignore[no-untyped-def]
    from migrate.sources import SourceError, resolve

    try:
        return resolve("b5421", via="auto"), resolve("b7785", via="auto")
    except SourceError as exc:
        pytest.skip(f"llama.cpp trees b5421/b7785 not available here: {exc}")


def test_mining_llama_cpp_b5421_to_b7785(tmp_path: Path) -> None:
    """Real trees, real libclang: the kv_self memory rules come out as memory_call rules the engine reproduces."""
    from migrate.apidiff import load_surface
    from migrate.mine import mine, render_file, tree_corpus
    from migrate.rewrite.rules import load_rules

    old_tree, new_tree = _trees()
    result = mine(old_tree, new_tree, load_surface(old_tree), load_surface(new_tree),
                  [tree_corpus(old_tree, new_tree)])  # fmt: skip
    path = tmp_path / "mined.yaml"
    path.write_text(render_file(result, []))
    ruleset = load_rules(path)  # the schema of rules/*.yaml
    by_function = {r.match.function: r for r in ruleset.rules}
    for name in ("seq_rm", "seq_cp", "seq_keep", "seq_pos_max"):
        rule = by_function[f"llama_kv_self_{name}"]
        assert (rule.kind, rule.fix) == ("memory_call", f"llama_memory_{name}({{mem}}, {{rest}})"), rule
        assert rule.invalid, rule.id
    # true in 11 uses (tools/perplexity, cvector-generator, ...), false in 2 (tools/llama-bench): one shape whose
    # literal is an option, default true; a case per value, each reproduced by the engine (nothing demoted below)
    clear = by_function["llama_kv_self_clear"]
    assert (clear.kind, clear.fix, clear.options) == ("memory_call", "llama_memory_clear({mem}, "
                                                      "{llama_memory_clear_data})", ("llama_memory_clear_data",))
    option = ruleset.options["llama_memory_clear_data"]
    assert option.default is True and set(option.decisions) == {True, False}
    assert "11 of 13" in option.decisions[True] and "2 of 13" in option.decisions[False]
    assert {} in [c.options for c in clear.invalid] and {"llama_memory_clear_data": False} in [
        c.options for c in clear.invalid]  # fmt: skip
    assert not [r for r in result.rules if r.demoted], [r.demoted for r in result.rules if r.demoted]
    for rule in result.rules:
        assert rule.data["mined"] is True
        assert all(p["at_from"].startswith("b5415:") for p in rule.data["provenance"])


def test_a_corpus_that_is_one_folder_is_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "migrate", "rules", "mine", "--from", "b5421", "--to", "b7785",
                           "--corpus", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "give OLD=NEW" in proc.stderr and "Traceback" not in proc.stderr


def test_a_call_of_another_function_by_a_minority_is_left_out_not_a_conflict() -> None:
    # tools/mtmd/mtmd-cli.cpp's /clear: seq_rm(ctx.lctx, 0, 1, -1) became llama_memory_clear(..., true) at b7836
    # (it now clears everything), while the other uses kept llama_memory_seq_rm
    pairs = [
        _pair("llama_kv_self_seq_rm(ctx, 0, n_past, -1)", "llama_memory_seq_rm(llama_get_memory(ctx), 0, n_past, -1)"),
        _pair("llama_kv_self_seq_rm(ctx, i, -1, -1)", "llama_memory_seq_rm(llama_get_memory(ctx), i, -1, -1)"),
        _pair("llama_kv_self_seq_rm(ctx.lctx, 0, 1, -1)", "llama_memory_clear(llama_get_memory(ctx.lctx), true)"),
    ]  # fmt: skip
    gen = generalise("llama_kv_self_seq_rm", pairs, KNOWN)
    assert gen.shape == Shape.RULE and len(gen.used) == 2
    assert "called llama_memory_clear here instead" in gen.excluded[0].reason


# --- every bundled release (`migrate sources --list --probe`) --------------------------------------------------


def test_probe_reads_every_version_not_a_bisection(tmp_path: Path) -> None:
    from migrate.sources import SourceCache
    from tests.test_sources import RELEASES, FakeRegistry

    registry = FakeRegistry(SourceCache(tmp_path), RELEASES, extra=("2.8.0",))
    catalogue = registry.catalogue()
    assert catalogue.probe_all() == []
    assert sorted(registry.fetched) == sorted(RELEASES)  # each of the 42 stable versions once, 2.x left out
    assert catalogue.listing() == sorted(RELEASES.items(), key=lambda item: [int(p) for p in item[0].split(".")])
    assert list((tmp_path / "npm").glob("*.tgz")) == []  # tarballs read only for their release are deleted
    again = FakeRegistry(SourceCache(tmp_path), RELEASES)
    assert again.catalogue().probe_all() == [] and again.fetched == []  # the cached map answers it


def test_list_without_probe_reads_nothing(tmp_path: Path) -> None:
    from migrate.sources import SourceCache
    from tests.test_sources import RELEASES, FakeRegistry

    registry = FakeRegistry(SourceCache(tmp_path), RELEASES)
    listing = registry.catalogue().listing()
    assert registry.fetched == [] and len(listing) == len(RELEASES)
    assert {release for _, release in listing} == {None}


def test_a_moved_file_is_found_by_its_likeness(tmp_path: Path) -> None:
    # tools/main/main.cpp (b5415) became tools/completion/completion.cpp (b7836); other programs have a main too
    body = "    int n_keep = 4, n_discard = 8, n_past = 32, ga_i = 0;\n    common_params params; prompt(params);\n"
    old = tmp_path / "a" / "main"
    new_home, other = tmp_path / "b" / "completion", tmp_path / "b" / "bench"
    for folder in (old, new_home, other):
        folder.mkdir(parents=True)
    (old / "main.cpp").write_text("int main(llama_context * ctx) {\n" + body
                                  + "    llama_kv_self_seq_rm(ctx, 0, n_keep, n_keep + n_discard);\n}\n")  # fmt: skip
    (new_home / "completion.cpp").write_text("int main(llama_context * ctx) {\n" + body
                                             + "    llama_memory_seq_rm(llama_get_memory(ctx), 0, n_keep, "
                                               "n_keep + n_discard);\n}\n")  # fmt: skip
    (other / "bench.cpp").write_text("int main(int argc, char ** argv) {\n    return run_bench(argc, argv);\n}\n")
    pairs = pair_uses(Side([tmp_path / "a"]), Side([tmp_path / "b"]), {"llama_kv_self_seq_rm"})
    assert [(p.fate, p.b_file and p.b_file.name) for p in pairs] == [(PairFate.PAIRED, "completion.cpp")]
