"""Find exact and near-duplicate faces: a SHA-256 of the source bytes and a DCT perceptual hash.

The perceptual hash (pHash) keeps the signs of the lowest 2-D DCT frequencies of a small
greyscale copy. Re-encoding, resizing or slightly blurring a photo changes only a few
bits, while two different photos differ in about half of them.
It is computed on the aligned face, so the same face cropped out of two different
framings of one photo still matches.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

# pHash side: the image is reduced to HASH_INPUT x HASH_INPUT pixels and the lowest
# HASH_SIDE x HASH_SIDE DCT frequencies give HASH_SIDE**2 bits.
HASH_INPUT = 32
HASH_SIDE = 16
HASH_BITS = HASH_SIDE * HASH_SIDE


@functools.lru_cache(maxsize=None)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k contains the k-th cosine basis over n samples."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """Compute the pHash of an HxWx3 or HxW uint8 image as HASH_BITS/8 packed uint8 bytes.

    Each bit records whether one low-frequency DCT coefficient is above the median of those
    coefficients. The DC term takes part in the hash but not in the median, because it
    only measures overall brightness and would shift the median.
    """
    grey = Image.fromarray(np.asarray(image)).convert("L")
    small = grey.resize((HASH_INPUT, HASH_INPUT), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _dct_matrix(HASH_INPUT)
    coefficients = (dct @ pixels @ dct.T)[:HASH_SIDE, :HASH_SIDE].ravel()
    median = np.median(coefficients[1:])
    return np.packbits(coefficients > median)


# Set bits of every byte value, for NumPy versions before 2.0 without np.bitwise_count.
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def hamming_distances(hashes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Count differing bits between each row of ``hashes`` (N x bytes) and ``query``."""
    differing = np.bitwise_xor(hashes, query)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(differing).sum(axis=1, dtype=np.int64)
    return _POPCOUNT[differing].sum(axis=1, dtype=np.int64)


def hash_hex(packed: np.ndarray) -> str:
    """Format a packed hash as a hex string for the manifest."""
    return bytes(packed).hex()


def hash_from_hex(text: str) -> np.ndarray:
    """Parse a hex string written by ``hash_hex`` back into packed bytes."""
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8)


class DuplicateIndex:
    """Remembers the faces kept so far and reports whether a new one repeats one of them.

    ``max_distance`` is the largest Hamming distance between pHashes still counted as the
    same image. A negative value turns the near-duplicate check off.
    """

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self._hashes = np.zeros((0, HASH_BITS // 8), dtype=np.uint8)
        self._keys: list[str] = []
        self._capacity_rows = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, packed: np.ndarray, key: str) -> None:
        """Store the hash of a kept face under ``key`` (its output path, for the report)."""
        count = len(self._keys)
        if count == self._capacity_rows:
            # Grow geometrically so adding N faces copies O(N) rows in total.
            self._capacity_rows = max(64, 2 * self._capacity_rows)
            grown = np.zeros((self._capacity_rows, HASH_BITS // 8), dtype=np.uint8)
            grown[:count] = self._hashes[:count]
            self._hashes = grown
        self._hashes[count] = packed
        self._keys.append(key)

    def match(self, packed: np.ndarray) -> tuple[str, int] | None:
        """Return (key, distance) of the closest stored face within ``max_distance``, if any."""
        if self.max_distance < 0 or not self._keys:
            return None
        distances = hamming_distances(self._hashes[: len(self._keys)], packed)
        best = int(np.argmin(distances))
        if distances[best] > self.max_distance:
            return None
        return self._keys[best], int(distances[best])
