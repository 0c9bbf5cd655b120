"""C2SP tlog-tiles: tile paths, tile and entry-bundle encodings, and Merkle hashes read from tiles.

A log of `size` entries is published as:
- `tile/<L>/<N>`: the 256 hashes (32 bytes each) at tile level L with indices 256*N..256*N+255.
  Level 0 holds the leaf hashes; a hash at level L is the root of a complete subtree of 256**L
  leaves. While fewer than 256 exist, the partial tile is `tile/<L>/<N>.p/<W>` with W of them.
- `tile/entries/<N>` (`.p/<W>` when partial): the entries themselves, each behind a big-endian
  uint16 length.
- `checkpoint`: the signed checkpoint of `size`.
- `<N>` is written in groups of three digits, every group but the last prefixed with `x`:
  1234067 is `x001/x234/067`.

Rules: pure functions; a tile's width follows from the checkpoint size alone, so a reader asks for
exactly the bytes that size implies and refuses anything else (`TileError`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from privproc.errors import DecodeError, TrailingDataError, TruncatedError, UsageError
from privproc.tlog.merkle import node_hash

__all__ = [
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileError",
    "TileHashReader",
    "decode_bundle",
    "encode_bundle",
    "encode_index",
    "entries_path",
    "tile_of",
    "tile_path",
    "tile_width",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
HASH_SIZE = 32
MAX_ENTRY_SIZE = 0xFFFF


class TileError(DecodeError):
    """A tile or entry bundle does not have the shape the checkpoint implies."""


def encode_index(n: int) -> str:
    """The tlog-tiles path form of a tile index: 3-digit groups, all but the last with `x`."""
    if n < 0:
        raise UsageError("a tile index is not negative")
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise UsageError("a tile holds 1 to 256 hashes or entries")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    if not 0 <= level <= 63:
        raise UsageError("a tile level is 0 to 63")
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes tile (level, index) holds in a tree of `size` leaves (0 if none)."""
    count = size >> (TILE_HEIGHT * level)  # complete subtrees of 256**level leaves
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise UsageError("an entry in a bundle is at most 65535 bytes")
        out += len(entry).to_bytes(2, "big")
        out += entry
    return bytes(out)


def decode_bundle(data: bytes, count: int) -> list[bytes]:
    """Exactly `count` entries, or a `TileError`."""
    entries = []
    pos = 0
    view = memoryview(data)
    for _ in range(count):
        if pos + 2 > len(data):
            raise TruncatedError("the entry bundle ends before its last entry")
        length = int.from_bytes(view[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(data):
            raise TruncatedError("an entry in the bundle is cut short")
        entries.append(bytes(view[pos : pos + length]))
        pos += length
    if pos != len(data):
        raise TrailingDataError("bytes follow the last entry of the bundle")
    return entries


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two run of equal-height subtree hashes."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise UsageError("a subtree root needs a power-of-two number of hashes")
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_of(tree_level: int, index: int) -> tuple[int, int]:
    """(tile level, tile index) of the tile that holds the hashes `hash_at(tree_level, index)`
    is built from."""
    level, rest = divmod(tree_level, TILE_HEIGHT)
    return level, (index << rest) // TILE_WIDTH


# A tile getter returns the bytes of tile (level, index) at the given width.
TileGetter = Callable[[int, int, int], bytes]


class TileHashReader:
    """Answers `hash_at(tree_level, index)` for a tree of `size` leaves from its tiles.

    It fetches each tile at most once per reader (through `get_tile`) and checks its length; what
    the hashes mean is proven by the caller, who checks the proof against a signed root."""

    def __init__(self, size: int, get_tile: TileGetter) -> None:
        self.size = size
        self._get_tile = get_tile
        self._tiles: dict[tuple[int, int], bytes] = {}

    def tile(self, level: int, index: int) -> bytes:
        key = (level, index)
        data = self._tiles.get(key)
        if data is None:
            width = tile_width(level, index, self.size)
            if width == 0:
                raise UsageError("that tile does not exist in a tree of this size")
            data = self._get_tile(level, index, width)
            if len(data) != width * HASH_SIZE:
                raise TileError(f"tile {tile_path(level, index, width)} has the wrong length")
            self._tiles[key] = data
        return data

    def hash_at(self, tree_level: int, index: int) -> bytes:
        """The root of the complete subtree of 2**tree_level leaves starting at index << level."""
        if (index + 1) << tree_level > self.size:
            raise UsageError("that subtree is not complete in a tree of this size")
        level, tile_index = tile_of(tree_level, index)
        rest = tree_level % TILE_HEIGHT
        count = 1 << rest
        offset = (index << rest) % TILE_WIDTH  # of the first hash, at tile level `level`
        data = self.tile(level, tile_index)
        hashes = [
            data[(offset + i) * HASH_SIZE : (offset + i + 1) * HASH_SIZE] for i in range(count)
        ]
        return subtree_root(hashes)


def leaf_hash_of(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()
