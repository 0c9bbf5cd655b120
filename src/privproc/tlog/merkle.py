"""Merkle trees of RFC 9162 §2.1 (= RFC 6962 §2.1) over SHA-256, and the subtrees of MTC.

Hashes: a leaf is SHA-256(0x00 || data), an interior node SHA-256(0x01 || left || right), the
empty tree SHA-256(""). MTH(D[a:b]) is the Merkle Tree Hash of leaves a..b-1; a *complete*
subtree covers 2**level leaves starting at a multiple of 2**level.

Subtrees (draft-ietf-plants-merkle-tree-certs §"Subtrees"): `[start, end)` is a valid subtree
when start <= end and start is a multiple of BIT_CEIL(end - start). Its hash is MTH(D[start:end])
built over those leaves as a list of their own; an inclusion proof into it is an RFC 9162 proof
for leaf index - start in a tree of end - start leaves, and a subtree consistency proof shows that
its leaves are the same leaves in a tree of `size`. [0, n) is the tree of n leaves itself.

Rules:
- Pure functions over bytes; no I/O, no state.
- Verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and the draft's subtree procedures step for step;
  they raise `ProofError` subclasses and nothing else, whatever the input. Every hash handed to a
  verifier must be exactly 32 bytes; sizes and indices must lie in [0, 2**64).
- A proof longer than any tree of 2**64 leaves can need is refused before a single hash is taken.
- Consistency from the empty tree is refused (transparency-dev/merkle does the same and its test
  vectors demand it); RFC 9162 only defines proofs for 0 < old_size < new_size.
- Generators take either the full list of leaf hashes (the reference used by tests) or a
  `HashAt` callable, so that a tiled log answers from stored complete subtrees; a hash of an
  incomplete right edge is always composed from the complete subtrees it covers. Bad arguments
  to a generator raise `UsageError`.
- Messages name sizes and indices, never hash bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from privproc.errors import CryptoError, UsageError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_CONSISTENCY_PROOF",
    "MAX_INCLUSION_PROOF",
    "MAX_TREE_SIZE",
    "ConsistencyProofError",
    "Hash",
    "HashAt",
    "InclusionProofError",
    "ProofError",
    "consistency_proof",
    "consistency_proof_from",
    "inclusion_proof",
    "inclusion_proof_from",
    "is_valid_subtree",
    "leaf_hash",
    "node_hash",
    "root_from",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "subtree_consistency_proof",
    "subtree_consistency_proof_from",
    "subtree_inclusion_proof",
    "subtree_inclusion_proof_from",
    "verify_consistency",
    "verify_inclusion",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]

Hash = bytes

HashAt = Callable[[int, int], bytes]
"""`hash_at(level, index)` returns MTH(D[index * 2**level : (index + 1) * 2**level]), the hash of
the complete subtree of 2**level leaves that starts at leaf index * 2**level (level 0: the leaf
hash of entry `index`). Generators only ask for subtrees that end at or before the tree size they
were given, so a tiled log can answer from full tiles and the complete nodes of partial ones. It
must return 32 bytes (anything else raises `UsageError`); its own exceptions propagate."""

HASH_SIZE = 32
EMPTY_ROOT: Hash = hashlib.sha256(b"").digest()
# RFC 9162 sizes are uint64: 64 levels at most, one hash per level in an inclusion proof; a
# (subtree) consistency proof has at most one seed plus two hashes per level.
MAX_TREE_SIZE = (1 << 64) - 1
MAX_INCLUSION_PROOF = 64
MAX_CONSISTENCY_PROOF = 2 * 64


class ProofError(CryptoError):
    """A Merkle proof does not verify, or what it was given to verify is malformed."""


class InclusionProofError(ProofError):
    """An inclusion proof (into a tree or a subtree) does not lead from the leaf to the root."""


class ConsistencyProofError(ProofError):
    """A consistency proof (from a tree or a subtree) does not tie it to the larger tree."""


# --- Hashing -------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> Hash:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> Hash:
    """SHA-256(0x01 || left || right); any byte strings, as the RFC 6962 node vectors need."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def is_valid_subtree(start: int, end: int) -> bool:
    """Whether 0 <= start <= end and start is a multiple of BIT_CEIL(end - start)."""
    if not 0 <= start <= end:
        return False
    width = end - start
    bit_ceil = 1 if width <= 1 else 1 << (width - 1).bit_length()
    return start % bit_ceil == 0


# --- Reference generators over a full list of leaf hashes ---------------------------------------
# Straight from the recursive definitions (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1; the draft's
# SUBTREE_SUBPROOF), kept independent of the `HashAt` generators so that tests can compare them.


def _check_leaves(hashes: Sequence[bytes]) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise UsageError(f"leaf hashes are {HASH_SIZE} bytes, got one of {len(h)}")


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> Hash:
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[lo]
    k = _split(n)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> Hash:
    """MTH over the given leaf hashes (for tests and small trees: it hashes every node)."""
    _check_leaves(hashes)
    return _mth(hashes, 0, len(hashes))


def _path(hashes: Sequence[bytes], m: int, lo: int, hi: int) -> list[Hash]:
    # PATH(m, D[lo:hi]) with m relative to lo.
    n = hi - lo
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(hashes, m, lo, lo + k), _mth(hashes, lo + k, hi)]
    return [*_path(hashes, m - k, lo + k, hi), _mth(hashes, lo, lo + k)]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[Hash]:
    """PATH(index, D_n) for the tree of all the given leaf hashes."""
    _check_leaves(leaf_hashes)
    if not 0 <= index < len(leaf_hashes):
        raise UsageError(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _path(leaf_hashes, index, 0, len(leaf_hashes))


def _subproof(hashes: Sequence[bytes], m: int, lo: int, hi: int, known: bool) -> list[Hash]:
    # SUBPROOF(m, D[lo:hi], b) of RFC 9162 §2.1.4.1, m relative to lo.
    n = hi - lo
    if m == n:
        return [] if known else [_mth(hashes, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(hashes, m, lo, lo + k, known), _mth(hashes, lo + k, hi)]
    return [*_subproof(hashes, m - k, lo + k, hi, False), _mth(hashes, lo, lo + k)]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[Hash]:
    """PROOF(old_size, D[0:new_size]); empty when the sizes are equal, refused from size 0."""
    _check_leaves(leaf_hashes)
    if not 0 < old_size <= new_size <= len(leaf_hashes):
        raise UsageError(
            f"consistency needs 0 < {old_size} <= {new_size} <= {len(leaf_hashes)} leaves"
        )
    return _subproof(leaf_hashes, old_size, 0, new_size, True)


def subtree_inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, start: int, end: int
) -> list[Hash]:
    """The inclusion proof of leaf `index` into subtree [start, end) of the given leaves."""
    _check_leaves(leaf_hashes)
    if not is_valid_subtree(start, end) or end > len(leaf_hashes) or not start <= index < end:
        raise UsageError(f"leaf {index} in subtree [{start}, {end}) of {len(leaf_hashes)} leaves")
    return _path(leaf_hashes, index - start, start, end)


def _subtree_subproof(
    hashes: Sequence[bytes], start: int, end: int, lo: int, hi: int, known: bool
) -> list[Hash]:
    # SUBTREE_SUBPROOF(start, end, D[lo:hi], b) with start, end relative to lo.
    n = hi - lo
    if start == 0 and end == n:
        return [] if known else [_mth(hashes, lo, hi)]
    k = _split(n)
    if end <= k:
        return [*_subtree_subproof(hashes, start, end, lo, lo + k, known), _mth(hashes, lo + k, hi)]
    if k <= start:
        rest = _subtree_subproof(hashes, start - k, end - k, lo + k, hi, known)
        return [*rest, _mth(hashes, lo, lo + k)]
    # start < k < end: only start == 0 is a valid subtree here.
    return [*_subtree_subproof(hashes, 0, end - k, lo + k, hi, False), _mth(hashes, lo, lo + k)]


def subtree_consistency_proof(
    leaf_hashes: Sequence[bytes], start: int, end: int, size: int
) -> list[Hash]:
    """SUBTREE_PROOF(start, end, D[0:size]) of the draft; empty for an empty subtree."""
    _check_leaves(leaf_hashes)
    if not is_valid_subtree(start, end) or not end <= size <= len(leaf_hashes):
        raise UsageError(f"subtree [{start}, {end}) in a tree of {size} of {len(leaf_hashes)}")
    if start == end:
        return []
    return _subtree_subproof(leaf_hashes, start, end, 0, size, True)


# --- Generators over complete subtrees (HashAt) --------------------------------------------------


def _complete(hash_at: HashAt, level: int, index: int) -> Hash:
    h = hash_at(level, index)
    if len(h) != HASH_SIZE:
        raise UsageError(f"hash_at({level}, {index}) returned {len(h)} bytes, not {HASH_SIZE}")
    return h


def _range_hash(hash_at: HashAt, lo: int, hi: int) -> Hash:
    """MTH(D[lo:hi]) for lo a multiple of BIT_CEIL(hi - lo), from complete subtrees only.

    The binary decomposition of hi - lo, largest part first, cuts [lo, hi) into complete subtrees
    (each part starts at a multiple of its own width); MTH folds them from the right.
    """
    width = hi - lo
    if width == 0:
        return EMPTY_ROOT
    parts: list[Hash] = []
    at = lo
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            parts.append(_complete(hash_at, level, at >> level))
            at += 1 << level
    acc = parts.pop()
    while parts:
        acc = node_hash(parts.pop(), acc)
    return acc


def _check_size(value: int, what: str) -> None:
    if not 0 <= value <= MAX_TREE_SIZE:
        raise UsageError(f"{what} {value} is outside [0, 2**64)")


def root_from(hash_at: HashAt, size: int) -> Hash:
    """MTH(D[0:size]) read through `hash_at`: one call per set bit of size."""
    _check_size(size, "tree size")
    return _range_hash(hash_at, 0, size)


def _path_from(hash_at: HashAt, index: int, lo: int, hi: int) -> list[Hash]:
    # PATH(index - lo, D[lo:hi]) with absolute indices; the loop walks down from the top, so the
    # siblings come out top first and are reversed at the end.
    siblings: list[Hash] = []
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            siblings.append(_range_hash(hash_at, mid, hi))
            hi = mid
        else:
            siblings.append(_range_hash(hash_at, lo, mid))
            lo = mid
    siblings.reverse()
    return siblings


def inclusion_proof_from(hash_at: HashAt, size: int, index: int) -> list[Hash]:
    """PATH(index, D[0:size]), every hash read through `hash_at`."""
    _check_size(size, "tree size")
    if not 0 <= index < size:
        raise UsageError(f"leaf index {index} is outside a tree of {size} leaves")
    return _path_from(hash_at, index, 0, size)


def subtree_inclusion_proof_from(hash_at: HashAt, index: int, start: int, end: int) -> list[Hash]:
    """The inclusion proof of leaf `index` into subtree [start, end), through `hash_at`."""
    _check_size(end, "subtree end")
    if not is_valid_subtree(start, end) or not start <= index < end:
        raise UsageError(f"leaf {index} is not in a valid subtree [{start}, {end})")
    return _path_from(hash_at, index, start, end)


def _subtree_proof_from(hash_at: HashAt, start: int, end: int, size: int) -> list[Hash]:
    # SUBTREE_SUBPROOF(start, end, D[0:size], true) with absolute indices, walking down from the
    # root; `known` turns false once the subtree's root is not a node of the larger tree.
    lo, hi, known = 0, size, True
    siblings: list[Hash] = []
    while not (start == lo and end == hi):
        mid = lo + _split(hi - lo)
        if end <= mid:
            siblings.append(_range_hash(hash_at, mid, hi))
            hi = mid
        elif mid <= start:
            siblings.append(_range_hash(hash_at, lo, mid))
            lo = mid
        else:  # start == lo < mid < end, the only straddling case a valid subtree allows
            siblings.append(_range_hash(hash_at, lo, mid))
            lo = start = mid
            known = False
    if not known:
        siblings.append(_range_hash(hash_at, lo, hi))
    siblings.reverse()
    return siblings


def consistency_proof_from(hash_at: HashAt, old_size: int, new_size: int) -> list[Hash]:
    """PROOF(old_size, D[0:new_size]) through `hash_at`; refused from size 0."""
    _check_size(new_size, "tree size")
    if not 0 < old_size <= new_size:
        raise UsageError(f"consistency needs 0 < {old_size} <= {new_size}")
    return _subtree_proof_from(hash_at, 0, old_size, new_size)


def subtree_consistency_proof_from(hash_at: HashAt, start: int, end: int, size: int) -> list[Hash]:
    """SUBTREE_PROOF(start, end, D[0:size]) through `hash_at`; empty for an empty subtree."""
    _check_size(size, "tree size")
    if not is_valid_subtree(start, end) or end > size:
        raise UsageError(f"[{start}, {end}) is not a valid subtree of a tree of {size} leaves")
    if start == end:
        return []
    return _subtree_proof_from(hash_at, start, end, size)


# --- Verification --------------------------------------------------------------------------------


def _check_int(value: int, what: str, error: type[ProofError]) -> None:
    if not 0 <= value <= MAX_TREE_SIZE:
        raise error(f"{what} {value} is outside [0, 2**64)")


def _check_hash(value: bytes, what: str, error: type[ProofError]) -> None:
    if len(value) != HASH_SIZE:
        raise error(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], bound: int, error: type[ProofError]) -> None:
    # Length first: an oversized proof is refused without touching its elements.
    if len(proof) > bound:
        raise error(f"proof has {len(proof)} hashes; no tree needs more than {bound}")
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise error(f"proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")


def _chain_inclusion(
    hash_: bytes, index: int, size: int, proof: Sequence[bytes], error: type[ProofError]
) -> Hash:
    """RFC 9162 §2.1.3.2 steps 2-5 for a checked 0 <= index < size: the root the proof implies."""
    fn, sn = index, size - 1
    r = hash_
    for p in proof:
        if sn == 0:
            raise error(f"proof is longer than leaf {index} of a tree of {size} needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # p was the left sibling of the right edge: skip the levels with no sibling.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise error(f"proof is shorter than leaf {index} of a tree of {size} needs")
    return r


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> Hash:
    """The root that `proof` implies for `leaf_hash` at `index` in a tree of `size` leaves."""
    _check_int(index, "leaf index", InclusionProofError)
    _check_int(size, "tree size", InclusionProofError)
    if index >= size:
        raise InclusionProofError(f"leaf index {index} is not below the tree size {size}")
    _check_hash(leaf_hash, "leaf hash", InclusionProofError)
    _check_proof(proof, MAX_INCLUSION_PROOF, InclusionProofError)
    return _chain_inclusion(leaf_hash, index, size, proof, InclusionProofError)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: `leaf_hash` is leaf `index` of the tree of `size` with hash `root`."""
    _check_hash(root, "root", InclusionProofError)
    if root_from_inclusion_proof(leaf_hash, index, size, proof) != root:
        raise InclusionProofError(f"inclusion proof for leaf {index} of {size} does not match")


def verify_subtree_inclusion(
    leaf_hash: bytes, index: int, start: int, end: int, proof: Sequence[bytes], subtree_root: bytes
) -> None:
    """Draft "Verifying a Subtree Inclusion Proof": leaf `index` is in subtree [start, end)."""
    for value, what in ((index, "leaf index"), (start, "subtree start"), (end, "subtree end")):
        _check_int(value, what, InclusionProofError)
    if not is_valid_subtree(start, end) or not start <= index < end:
        raise InclusionProofError(f"leaf {index} is not in a valid subtree [{start}, {end})")
    _check_hash(leaf_hash, "leaf hash", InclusionProofError)
    _check_hash(subtree_root, "subtree root", InclusionProofError)
    _check_proof(proof, MAX_INCLUSION_PROOF, InclusionProofError)
    # The subtree is a tree of its own: index - start among end - start leaves.
    computed = _chain_inclusion(leaf_hash, index - start, end - start, proof, InclusionProofError)
    if computed != subtree_root:
        raise InclusionProofError(f"inclusion proof for leaf {index} in [{start}, {end}) fails")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: the tree of `new_size` leaves extends the tree of `old_size` leaves."""
    E = ConsistencyProofError
    _check_int(old_size, "old size", E)
    _check_int(new_size, "new size", E)
    _check_hash(old_root, "old root", E)
    _check_hash(new_root, "new root", E)
    _check_proof(proof, MAX_CONSISTENCY_PROOF, E)
    if old_size > new_size:
        raise E(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        # Every tree extends the empty one; a "proof" of it proves nothing and is refused.
        raise E("consistency from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise E(f"equal sizes need an empty proof, got {len(proof)} hashes")
        if old_root != new_root:
            raise E(f"two different roots for the same size {old_size}")
        return
    # From here 0 < old_size < new_size, the RFC's precondition.
    if not proof:  # step 1
        raise E(f"empty proof between sizes {old_size} and {new_size}")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: the old tree is a complete subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise E(f"proof is longer than sizes {old_size} and {new_size} need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise E(f"proof is shorter than sizes {old_size} and {new_size} need")
    if fr != old_root:
        raise E(f"proof does not lead to the old root of size {old_size}")
    if sr != new_root:
        raise E(f"proof does not lead to the new root of size {new_size}")


def verify_subtree_consistency(
    start: int,
    end: int,
    size: int,
    subtree_root: bytes,
    root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Draft "Verifying a Subtree Consistency Proof": subtree [start, end) is in the tree of `size`.

    An empty subtree [s, s) is accepted with an empty proof when `subtree_root` is the empty-tree
    hash, whatever `root` is (the draft's step 2 stops there). For start == 0 this is
    `verify_consistency(end, size, ...)` except that end == 0 is an empty subtree, not an error.
    """
    E = ConsistencyProofError
    for value, what in ((start, "subtree start"), (end, "subtree end"), (size, "tree size")):
        _check_int(value, what, E)
    _check_hash(subtree_root, "subtree root", E)
    _check_hash(root, "root", E)
    _check_proof(proof, MAX_CONSISTENCY_PROOF, E)
    # Step 1.
    if not is_valid_subtree(start, end) or end > size:
        raise E(f"[{start}, {end}) is not a valid subtree of a tree of {size} leaves")
    if start == end:  # step 2
        if proof:
            raise E(f"an empty subtree needs an empty proof, got {len(proof)} hashes")
        if subtree_root != EMPTY_ROOT:
            raise E("an empty subtree's hash must be the empty-tree hash")
        return
    fn, sn, tn = start, end - 1, size - 1  # step 3
    if sn == tn:  # step 4: the subtree ends at the tree's right edge
        while fn != sn:
            fn >>= 1
            sn >>= 1
            tn >>= 1
    else:  # step 5: climb to the largest complete subtree ending at `end`
        while fn != sn and sn & 1:
            fn >>= 1
            sn >>= 1
            tn >>= 1
    path = list(proof)
    if fn == sn:  # step 6: the subtree's root is a node of the larger tree
        fr = sr = subtree_root
    else:  # step 7
        if not path:
            raise E(f"empty proof for [{start}, {end}) in a tree of {size}")
        fr = sr = path.pop(0)
    for c in path:  # step 8
        if tn == 0:
            raise E(f"proof is longer than [{start}, {end}) in a tree of {size} needs")
        if sn & 1 or sn == tn:
            if fn < sn:
                fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not sn & 1:
                fn >>= 1
                sn >>= 1
                tn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
        tn >>= 1
    # Step 9.
    if tn != 0:
        raise E(f"proof is shorter than [{start}, {end}) in a tree of {size} needs")
    if fr != subtree_root:
        raise E(f"proof does not lead to the hash of subtree [{start}, {end})")
    if sr != root:
        raise E(f"proof does not lead to the root of the tree of {size}")
