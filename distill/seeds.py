"""Seeds derived from (base seed, purpose, index) alone: results never depend on how work is spread."""

from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed determined by `base_seed`, the `purpose` string and `index` only."""
    digest = hashlib.sha256(f"{base_seed}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
