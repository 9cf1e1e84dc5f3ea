"""The prompts every build is checked with: fixed texts, so an old and a new build see exactly the same input.

Prompts of a given token length are grown from a fixed word list with the library's own tokenizer, so they are
the same on every build whose tokenizer agrees (the tokenizer check verifies that first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Greedy reference and differential comparison: plain prose, code, non-Latin script.
REFERENCE_PROMPTS: tuple[str, ...] = (
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "Привет, как дела?",
)

PROMPT_A = "The old lighthouse keeper climbed the stairs every evening and"
PROMPT_B = "List three colors:"
# longer than PROMPT_B plus its output, so cells an uncleared cache kept would sit beyond the new call's positions
PROMPT_LONG = "In the middle of the night, far away from the city lights, a small group of travellers " * 2

# Words a SentencePiece llama vocabulary keeps as single tokens, cycled to grow prompts of exact token lengths.
FILL_WORDS: tuple[str, ...] = (
    "river", "stone", "light", "paper", "green", "house", "music", "night", "table", "water", "happy", "bread",
    "sound", "chair", "plant", "cloud", "north", "south", "horse", "field", "metal", "glass", "story", "dream",
)  # fmt: skip


@dataclass(frozen=True)
class PromptSet:
    """Prompts for one parallel-isolation case, and the context they run in."""

    key: str
    title: str
    prompts: tuple[str, ...]
    n_ctx: int = 512
    n_seq_max: int = 4


SHARED_PREFIX = PromptSet(
    "shared_prefix",
    "prompts sharing a prefix",
    (
        "The museum opened its doors at nine, and the first visitors were",
        "The museum opened its doors at nine, and by noon the halls",
        "The museum opened its doors at nine, and a guard",
    ),
)
PREFIX_IS_PROMPT = PromptSet(
    "prefix_prompt",
    "one prompt is the shared prefix itself",
    ("The weather today is", "The weather today is cold and grey, so", "The weather today is perfect for"),
)
LAST_TOKEN = PromptSet(
    "last_token",
    "prompts differing only in their last token",
    ("My favourite animal is the cat", "My favourite animal is the dog", "My favourite animal is the horse"),
)
# 2 slots (n_seq_max 3: sequence 0 for the prefix, 1 and 2 for slots) and 7 prompts: slots are reused.
QUEUE = PromptSet(
    "queue",
    "more prompts than slots",
    (
        "Write a haiku about the sea:",
        "Name a famous scientist:",
        "The recipe needs flour, eggs and",
        "Translate 'good morning' into Spanish:",
        "A list of prime numbers: 2, 3, 5,",
        "The train left the station at",
        "Why is the sky blue?",
    ),
    n_ctx=512,
    n_seq_max=3,
)
PARALLEL_SETS: dict[str, PromptSet] = {s.key: s for s in (SHARED_PREFIX, PREFIX_IS_PROMPT, LAST_TOKEN, QUEUE)}

# Near capacity: a long shared prefix, so each sequence spans almost the whole context while the cells, which the
# sequences share at b5421, still fit. Sizes are fixed per context, the texts grown with the tokenizer.
CAPACITY_N_CTX = 1024
CAPACITY_N_SEQ_MAX = 4
CAPACITY_SUFFIXES: tuple[str, ...] = (" Then the bell", " After that, the lamp", " Finally a door")


def fill_text(n_words: int, offset: int = 0) -> str:
    return " ".join(FILL_WORDS[(offset + i) % len(FILL_WORDS)] for i in range(n_words))


def grow_to_tokens(count: Callable[[str], int], target: int, offset: int = 0) -> str:
    """Text of fill words whose token count (as `count` measures it, BOS included) is exactly `target`,
    or the closest below when one word adds more than one token."""
    lo, hi = 0, target
    while lo < hi:  # largest word count whose text stays within target tokens
        mid = (lo + hi + 1) // 2
        if count(fill_text(mid, offset)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return fill_text(lo, offset)


def capacity_prompts(count: Callable[[str], int], capacity: int, n_cells: int, max_tokens: int) -> list[str]:
    """Prompts sharing one long prefix, each sequence ending a few cells short of `capacity` positions while all
    their cells (prefix once, then every suffix and its output) fit `n_cells`."""
    suffix_tokens = max(count(s) for s in CAPACITY_SUFFIXES)  # BOS counted: an upper bound
    own = len(CAPACITY_SUFFIXES) * (suffix_tokens + max_tokens)
    prefix_tokens = min(capacity - suffix_tokens - max_tokens, n_cells - own) - 8
    prefix = grow_to_tokens(count, prefix_tokens)
    return [prefix + s for s in CAPACITY_SUFFIXES]

# On the stop model (`migrate model --eog`, see migrate/model.py EogRecipe) greedy decoding of these ends on EOS after
# the number of tokens beside each (EOS included; 13+: not within 12 tokens), at b5415 and b7836, every top-2 margin
# above 0.15: the first ends at once (empty output), the last runs to max_tokens.
EOG_PROMPTS: tuple[str, ...] = (
    "night glass",  # 1: EOS first, nothing generated
    "green cloud",  # 3
    "The water and the glass",  # 5
    "The table and the chair",  # 9
    "The stone and the north",  # 13+
)
# Slots that finish unevenly: a shared prefix ("The"), stops at different steps, more prompts than slots, so a slot
# that stops early is refilled while the others are still generating.
UNEVEN_PROMPTS: tuple[str, ...] = (
    "The stone and the north",  # 13+
    "The paper and the field",  # 2
    "The table and the chair",  # 9
    "The music and the glass",  # 4
    "The light and the chair",  # 13+
    "The water and the glass",  # 5
)
# Result order when slots finish out of prompt order: the first runs to max_tokens, the second stops after 2.
OUT_OF_ORDER_PROMPTS: tuple[str, ...] = ("The stone and the north", "The paper and the field", "green cloud")
