"""Feature cache keyed by image content hash, so no image is encoded twice by the same encoder.

The cache is a folder of append-only safetensors shards; each holds a ``features`` matrix
``(n, d)`` and, in its metadata, the content hashes of its rows (JSON) and the hash of the
encoder weights that produced them. A shard is written atomically, so an interrupted job leaves
only whole shards behind, and a rerun picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _atomic
from ..errors import BankError


def image_hash(image: np.ndarray) -> str:
    """Hex SHA-256 of an RGB image's shape and pixels (the same for a file and its array)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    head = "x".join(str(s) for s in image.shape).encode()
    return hashlib.sha256(head + b":" + image.tobytes()).hexdigest()


class FeatureCache:
    """Encoder features by image hash, persisted as shards in ``folder``.

    Args:
        folder: the cache folder (created on the first write).
        weights_hash: hash of the encoder weights; shards made by other weights are ignored.
    """

    def __init__(self, folder: str | os.PathLike, weights_hash: str) -> None:
        self.folder = Path(folder)
        self.weights_hash = weights_hash
        self._rows: dict[str, np.ndarray] | None = None

    def _index(self) -> dict[str, np.ndarray]:
        if self._rows is None:
            self._rows = {}
            if self.folder.is_dir():
                for shard in sorted(self.folder.glob("*.safetensors")):
                    self._load(shard)
        return self._rows

    def _load(self, shard: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(shard), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("weights_hash") != self.weights_hash:
                    return
                features = f.get_tensor("features")
            hashes = json.loads(meta["hashes"])
        except Exception as exc:  # safetensors raises several types for damaged files
            raise BankError(
                f"feature cache shard {shard} is damaged ({exc}); delete it and the images will be re-encoded"
            ) from exc
        if len(hashes) != features.shape[0]:
            raise BankError(
                f"feature cache shard {shard} lists {len(hashes)} hashes for {features.shape[0]} rows"
            )
        for h, row in zip(hashes, features, strict=True):
            self._rows.setdefault(h, row)  # type: ignore[union-attr]

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def missing(self, hashes: Sequence[str]) -> list[str]:
        """The hashes (in order, without repeats) that have no cached features."""
        index = self._index()
        return list(dict.fromkeys(h for h in hashes if h not in index))

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Features ``(len(hashes), d)`` float32 for cached hashes.

        Raises:
            BankError: a hash is not cached (the bank's feature files are incomplete).
        """
        index = self._index()
        absent = [h for h in hashes if h not in index]
        if absent:
            raise BankError(
                f"{len(absent)} image(s) have no cached features in {self.folder} (e.g. {absent[0][:12]}); "
                "the bank folder is incomplete: run `pbip bank undo` or rebuild it"
            )
        if not hashes:
            return np.zeros((0, 0), np.float32)
        return np.stack([index[h] for h in hashes]).astype(np.float32, copy=False)

    def add(self, hashes: Sequence[str], features: np.ndarray) -> None:
        """Store ``features (n, d)`` for ``hashes`` in a new shard, written atomically."""
        from safetensors.numpy import save_file

        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(hashes) != features.shape[0]:
            raise ValueError(f"{len(hashes)} hashes for {features.shape[0]} feature rows")
        if not len(hashes):
            return
        name = hashlib.sha256("".join(hashes).encode()).hexdigest()[:20]
        meta = {"hashes": json.dumps(list(hashes)), "weights_hash": self.weights_hash}
        self.folder.mkdir(parents=True, exist_ok=True)
        with _atomic.atomic_path(self.folder / f"{name}.safetensors") as tmp:
            save_file({"features": features}, str(tmp), metadata=meta)
        index = self._index()
        for h, row in zip(hashes, features, strict=True):
            index.setdefault(h, row)
