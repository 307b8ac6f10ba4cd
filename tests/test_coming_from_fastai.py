"""docs/coming_from_fastai.md, linked from the README, names only what tl_nlp exports (its code and its table)."""

import ast
import re
from pathlib import Path

import tl_nlp

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "coming_from_fastai.md"


def test_the_page_is_linked_and_every_tl_nlp_name_it_uses_exists():
    assert "(docs/coming_from_fastai.md)" in (ROOT / "README.md").read_text()
    text = PAGE.read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    imported = {
        alias.name for node in ast.walk(ast.parse(code)) if isinstance(node, ast.ImportFrom) and node.module == "tl_nlp"
        for alias in node.names
    }  # fmt: skip
    assert {"ClassificationInterpretation", "find_learning_rate", "train_classifier"} <= imported
    assert imported <= set(tl_nlp.__all__)
    # The table's right-hand column: every call it shows is an export of tl_nlp (or a method on one's result).
    right_column = [
        row.split(" | ")[1] for row in text.splitlines() if row.startswith("| `") or row.startswith("| the")
    ]
    calls = {name for cell in right_column for name in re.findall(r"`([a-z_]+|[A-Z]\w+)\(", cell)}
    known = set(tl_nlp.__all__) | {"pipeline", "from_pretrained", "AWDLSTMConfig"}
    assert calls and calls <= known, calls - known
    for method in re.findall(r"`\.([a-z_]+)\(", text):
        assert hasattr(tl_nlp.ClassificationInterpretation, method) or hasattr(tl_nlp.LRFinderResult, method), method
