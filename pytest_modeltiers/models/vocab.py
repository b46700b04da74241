"""Reading a text model's vocabulary size from its input embedding.

PYTEST_DONT_REWRITE

A default vocabulary (such as 50257) would feed a smaller model out-of-range token ids, and it
would fail for the wrong reason; so the size comes from the model itself, or the user is told
how to set it.
"""

from __future__ import annotations

import re

from torch import nn

from pytest_modeltiers.errors import ModelSpecError

_TOKEN_NAME = re.compile(r"(tok|word|wte|vocab|embed_tokens|shared)", re.IGNORECASE)
_POSITION_NAME = re.compile(r"(pos|wpe|position|segment|type)", re.IGNORECASE)

HOW_TO_SET = (
    "set it with --task-option vocab_size=N or in the model file: "
    "TASK = {'name': ..., 'input_schema': {'vocab_size': N}}"
)


def infer_vocab_size(model: nn.Module, task_reason: str = "") -> tuple[int, str]:
    """``(vocab_size, where it was read)``; ``ModelSpecError`` when it cannot be told."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        embedding = getter()
        if isinstance(embedding, nn.Embedding):
            return embedding.num_embeddings, "get_input_embeddings()"
    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    context = f" (task {task_reason})" if task_reason else ""
    if not embeddings:
        raise ModelSpecError(
            f"cannot find the vocabulary size: {type(model).__name__} has no nn.Embedding"
            f"{context}; {HOW_TO_SET}"
        )
    if len(embeddings) == 1:
        name, embedding = embeddings[0]
        return embedding.num_embeddings, f"embedding {name}"
    tokens = [
        (n, m) for n, m in embeddings if _TOKEN_NAME.search(n) and not _POSITION_NAME.search(n)
    ]
    if len({m.num_embeddings for _, m in tokens}) == 1:
        name, embedding = tokens[0]
        return embedding.num_embeddings, f"embedding {name}"
    listing = ", ".join(f"{n} ({m.num_embeddings})" for n, m in embeddings)
    raise ModelSpecError(
        f"cannot tell which embedding holds the vocabulary: {listing}; {HOW_TO_SET}"
    )
