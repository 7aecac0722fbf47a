"""Wording shared by the generated text: a list in prose.

The claims, the paper's variables and the generated setup section all name lists of methods,
datasets and K in one style; one function keeps them alike.
"""

from __future__ import annotations


def join(items, word: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``: a list as the text reads it (empty: ``""``)."""
    items = [str(i) for i in items]
    if len(items) <= 2:
        return f" {word} ".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]
