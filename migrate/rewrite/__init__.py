"""The rewriter: rules (data) → libclang-matched sites → byte-range edits → a Plan that apply.py writes."""
