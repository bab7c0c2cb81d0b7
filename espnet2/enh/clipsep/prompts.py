"""Text queries expanded into prompts: every query in every template, the shared front of the text encoders."""

from typing import List, Sequence

__all__ = ["template_prompts"]


def template_prompts(queries: Sequence[str], templates: Sequence[str]) -> List[str]:
    """``[t.format(q) for q in queries for t in templates]``, each query stripped of surrounding spaces.

    A text encoder embeds these and takes the mean over each query's ``len(templates)`` prompts.

    Raises:
        TypeError: ``queries`` is one string (a sequence of its characters would be embedded).
        ValueError: An empty query, with its position.
    """
    if isinstance(queries, str):
        raise TypeError("queries must be a sequence of strings, not one string")
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"empty text query at position {i}")
    return [t.format(q.strip()) for q in queries for t in templates]
