"""The batch commands: MAP_LOOKUP_BATCH, MAP_LOOKUP_AND_DELETE_BATCH,
MAP_UPDATE_BATCH, MAP_DELETE_BATCH, with the kernel's two implementations:

* the generic one (arrays, LPM tries; updates and deletes of hash maps):
  lookups walk get_next_key and the batch token is the last key returned;
  updates and deletes go key by key and stop at the first failure;
* the hash maps' own lookups, which go bucket by bucket with the bucket
  number as the batch token, never split a bucket (ENOSPC when the first
  bucket does not fit in ``count``) and can delete what they return.

Either way ``count`` comes back as the number of elements done, also when
the command fails: a failed command raises OSError with ``.batch`` (a
:class:`BatchResult`) attached. Reaching the end of the map is ENOENT, as
in the kernel, with the last elements in ``.batch``.
"""
from __future__ import annotations

import errno
import struct
from typing import List, NamedTuple, Optional, Sequence

from ..uapi import Cmd, MapType
from .errors import ENOTSUPP, bpf_error

_U32 = struct.Struct("<I")

HASH_TYPES = frozenset({MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH,
                        MapType.LRU_PERCPU_HASH, MapType.HASH_OF_MAPS})
# which map types have which batch command (the map ops the kernel fills)
SUPPORTED = {
    Cmd.MAP_LOOKUP_BATCH: HASH_TYPES | {MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.LPM_TRIE,
                                        MapType.ARRAY_OF_MAPS},
    Cmd.MAP_LOOKUP_AND_DELETE_BATCH: HASH_TYPES,
    Cmd.MAP_UPDATE_BATCH: HASH_TYPES | {MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.LPM_TRIE,
                                        MapType.ARRAY_OF_MAPS},
    Cmd.MAP_DELETE_BATCH: HASH_TYPES | {MapType.LPM_TRIE},
}


class BatchResult(NamedTuple):
    """What a batch command hands back: the elements done and the token
    (``out_batch``) to pass as ``in_batch`` to continue."""
    keys: List[bytes]
    values: List[bytes]
    count: int
    out_batch: Optional[bytes]


def _fail(code: int, message: str, result: BatchResult) -> OSError:
    e = bpf_error(code, message)
    e.batch = result
    return e


def check_elem_flags(elem_flags: int) -> None:
    # BPF_F_LOCK needs a bpf_spin_lock in the value, which needs BTF (none here)
    if elem_flags:
        raise bpf_error(errno.EINVAL, "elem_flags: only BPF_F_LOCK, for values with a "
                                      "bpf_spin_lock")


def supported(cmd: int, map_type: int) -> None:
    if map_type not in SUPPORTED[cmd]:
        raise bpf_error(ENOTSUPP, f"{MapType(map_type).name} has no {Cmd(cmd).name}")


def generic_lookup(m, in_batch: Optional[bytes], count: int, elem_flags: int) -> BatchResult:
    """generic_map_lookup_batch: walk get_next_key from the token key,
    passing over keys without a value (deleted meanwhile, empty fd-array
    slots). The token handed back is the last key walked, once any element
    was returned."""
    check_elem_flags(elem_flags)
    if count == 0:
        return BatchResult([], [], 0, None)
    keys, values = [], []
    prev = in_batch
    while len(keys) < count:
        try:
            key = m.get_next_key(prev)
        except OSError as e:
            out = prev if keys else None
            raise _fail(e.errno, "no more elements", BatchResult(keys, values, len(keys), out))
        prev = key
        try:
            values.append(m.lookup(key))
        except FileNotFoundError:
            continue
        keys.append(key)
    return BatchResult(keys, values, len(keys), prev)


def hash_lookup(m, in_batch: Optional[bytes], count: int, elem_flags: int, flags: int,
                delete: bool) -> BatchResult:
    """__htab_map_lookup_and_delete_batch: whole buckets at a time."""
    check_elem_flags(elem_flags)
    if flags:
        raise bpf_error(errno.EINVAL, "flags must be 0")
    if count == 0:
        return BatchResult([], [], 0, None)
    # a hash of maps keeps its keys in a C hash whose values are the map ids
    of_maps = m.slots is not None
    table = m.slots.ptrs if of_maps else m.core
    nbuckets = table.nbuckets
    if in_batch is not None and len(in_batch) < 4:     # the kernel copies 4 bytes in
        raise bpf_error(errno.EFAULT, "a hash map's batch token is a 4-byte bucket number")
    bucket = _U32.unpack(in_batch[:4])[0] if in_batch is not None else 0
    if bucket >= nbuckets:
        raise _fail(errno.ENOENT, "batch is past the last bucket",
                    BatchResult([], [], 0, None))
    keys: List[bytes] = []
    values: List[bytes] = []
    while True:
        items = table.bucket_items(bucket)
        if len(items) > count - len(keys):
            result = BatchResult(keys, values, len(keys), _U32.pack(bucket))
            if not keys:
                raise _fail(errno.ENOSPC, f"bucket {bucket} holds {len(items)} elements, "
                                          f"more than count {count}", result)
            return result
        for key, value in items:
            keys.append(key)
            values.append(m.slots.id_of(value) if of_maps else value)     # u32 map ids
            if delete:
                m.delete(key)
        bucket += 1
        if bucket >= nbuckets:
            raise _fail(errno.ENOENT, "no more elements",
                        BatchResult(keys, values, len(keys), _U32.pack(bucket)))


def update(m, keys: Sequence[bytes], values: Sequence[bytes], count: int,
           elem_flags: int) -> BatchResult:
    """generic_map_update_batch: key by key with BPF_ANY, stop at the first error."""
    check_elem_flags(elem_flags)
    done = 0
    for i in range(count):
        try:
            m.update(keys[i], values[i], elem_flags)
        except OSError as e:
            raise _fail(e.errno, f"element {i}: {e.strerror}",
                        BatchResult(list(keys[:done]), list(values[:done]), done, None))
        done += 1
    return BatchResult(list(keys[:done]), list(values[:done]), done, None)


def delete(m, keys: Sequence[bytes], count: int, elem_flags: int) -> BatchResult:
    """generic_map_delete_batch: key by key, stop at the first error."""
    check_elem_flags(elem_flags)
    done = 0
    for i in range(count):
        try:
            m.delete(keys[i])
        except OSError as e:
            raise _fail(e.errno, f"element {i}: {e.strerror}",
                        BatchResult(list(keys[:done]), [], done, None))
        done += 1
    return BatchResult(list(keys[:done]), [], done, None)
