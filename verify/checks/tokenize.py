"""basic: tokenize/detokenize on llama.cpp's own llama-spm test vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verify.checks.framework import Verdict, check, failures
from verify.checks.oracle_cases import text_cases
from verify.session import Session, SetupError, Skip

VOCAB_VECTORS = Path("models") / "ggml-vocab-llama-spm.gguf"
VECTOR_SEPARATOR = "\n__ggml_vocab_test__\n"
SPM_VOCAB_SIZE = 32000


def read_vectors(tree: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors, read as tests/test-tokenizer-0.cpp reads them."""
    raw = (tree / VOCAB_VECTORS.with_suffix(".gguf.inp")).read_text(encoding="utf-8")
    outs = (tree / VOCAB_VECTORS.with_suffix(".gguf.out")).read_text(encoding="utf-8").splitlines()
    texts = raw.split(VECTOR_SEPARATOR)
    if texts and texts[-1] == "":  # the file ends with a separator: no test after it
        texts.pop()
    if len(texts) != len(outs):
        raise SetupError(f"{tree / VOCAB_VECTORS}: {len(texts)} inputs but {len(outs)} outputs")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs, strict=True)]


@check("tokenize_detokenize", "basic", "tokenize/detokenize on llama.cpp's llama-spm test vectors")
def tokenize_detokenize(s: Session) -> Verdict:
    tree = s.observer.tree if s.observer else s.target.llama_tree
    if tree is None or not (tree / VOCAB_VECTORS.with_suffix(".gguf.inp")).is_file():
        raise Skip("no llama.cpp tree with models/ggml-vocab-llama-spm.gguf.inp for this build")
    model = s.model()
    if s.n_vocab(model) != SPM_VOCAB_SIZE:
        raise Skip(f"the model's vocabulary ({s.n_vocab(model)} tokens) is not llama-spm's: vectors don't apply")
    vectors = read_vectors(tree)
    tok_fail: list[dict[str, Any]] = []
    detok_fail: list[dict[str, Any]] = []
    for text, expected in vectors:
        got = s.shim.tokenize(model, text, add_special=False)  # as llama.cpp's own test: no BOS
        if not got.ok or got.value != expected:
            tok_fail.append({"text": text, "expected": expected, "got": got.value, "message": got.message})
        back = s.shim.detokenize(model, expected)
        if not back.ok or back.value != text:
            detok_fail.append({"tokens": expected, "expected": text, "got": back.value, "message": back.message})
    evidence = {"vectors": str(tree / VOCAB_VECTORS.with_suffix(".gguf.inp")), "cases": len(vectors),
                "tokenize_mismatches": tok_fail[:5], "n_tokenize_mismatches": len(tok_fail),
                "detokenize_mismatches": detok_fail[:5], "n_detokenize_mismatches": len(detok_fail)}  # fmt: skip
    # the oracle: markup, Unicode and empty texts against llama_tokenize / llama_detokenize (parse_special as the
    # consumer's [verify.reference] promises)
    evidence["reference"], oracle_problems = text_cases(s, model)
    ok = not tok_fail and not detok_fail and not oracle_problems
    parts = [f"{len(tok_fail)} tokenize and {len(detok_fail)} detokenize mismatches of {len(vectors)}"
             ] if tok_fail or detok_fail else []  # fmt: skip
    parts += oracle_problems[:4] + ([f"{len(oracle_problems) - 4} more against the reference"]
                                    if len(oracle_problems) > 4 else [])  # fmt: skip
    message = failures(parts)
    summary = f"{len(vectors) - len(tok_fail)}/{len(vectors)} tokenized, {len(vectors) - len(detok_fail)} round-trip"
    if isinstance(evidence["reference"], str):  # llama.cpp's primitives not reachable: say so beside the vectors
        summary += f"; {evidence['reference']}"
    return Verdict(ok, evidence, message, summary)
