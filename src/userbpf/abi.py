"""``union bpf_attr``, ``struct bpf_map_info`` and ``struct bpf_prog_info`` with the kernel's layout (ctypes).

Code written against the real syscall packs these and passes pointers to
its own buffers; :meth:`userbpf.Kernel.bpf` accepts the same union, reads the
buffers the pointers name and writes results back where the kernel would.

>>> import ctypes
>>> from userbpf import Kernel, Cmd, MapType
>>> attr = bpf_attr(map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
>>> fd = Kernel(ncpus=1).bpf(Cmd.MAP_CREATE, attr)
>>> fd
3
"""
from __future__ import annotations

import ctypes
from typing import Dict, Optional

BPF_OBJ_NAME_LEN = 16
u32, s32, u64 = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("inner_map_fd", u32),
                ("numa_node", u32), ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
                ("map_ifindex", u32), ("btf_fd", u32), ("btf_key_type_id", u32),
                ("btf_value_type_id", u32), ("btf_vmlinux_value_type_id", u32),
                ("map_extra", u64), ("value_type_btf_obj_fd", s32), ("map_token_fd", s32)]


class _ValueOrNext(ctypes.Union):
    _fields_ = [("value", u64), ("next_key", u64)]


class MapElemAttr(ctypes.Structure):
    _anonymous_ = ("_v",)
    _fields_ = [("map_fd", u32), ("key", u64), ("_v", _ValueOrNext), ("flags", u64)]


class MapBatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", u64), ("out_batch", u64), ("keys", u64), ("values", u64),
                ("count", u32), ("map_fd", u32), ("elem_flags", u64), ("flags", u64)]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64),
                ("kern_version", u32), ("prog_flags", u32),
                ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("prog_ifindex", u32),
                ("expected_attach_type", u32), ("prog_btf_fd", u32),
                ("func_info_rec_size", u32), ("func_info", u64), ("func_info_cnt", u32),
                ("line_info_rec_size", u32), ("line_info", u64), ("line_info_cnt", u32),
                ("attach_btf_id", u32), ("attach_prog_fd", u32), ("core_relo_cnt", u32),
                ("fd_array", u64), ("core_relos", u64), ("core_relo_rec_size", u32),
                ("log_true_size", u32), ("prog_token_fd", s32), ("fd_array_cnt", u32)]


class ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", u64), ("bpf_fd", u32), ("file_flags", u32), ("path_fd", s32)]


class TestRunAttr(ctypes.Structure):
    __test__ = False          # not a pytest class
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32),
                ("data_size_out", u32), ("data_in", u64), ("data_out", u64),
                ("repeat", u32), ("duration", u32), ("ctx_size_in", u32),
                ("ctx_size_out", u32), ("ctx_in", u64), ("ctx_out", u64), ("flags", u32),
                ("cpu", u32), ("batch_size", u32)]


class _IdUnion(ctypes.Union):
    _fields_ = [("start_id", u32), ("prog_id", u32), ("map_id", u32), ("btf_id", u32),
                ("link_id", u32)]


class GetIdAttr(ctypes.Structure):
    _anonymous_ = ("_id",)
    _fields_ = [("_id", _IdUnion), ("next_id", u32), ("open_flags", u32),
                ("fd_by_id_token_fd", s32)]


class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class bpf_attr(ctypes.Union):
    """The kernel's ``union bpf_attr`` (the parts userbpf implements).

    Anonymous members put the field names at the top level, as in C:
    ``attr.map_fd``, ``attr.key``; ``attr.batch`` and ``attr.info`` are
    named, as in the kernel. ``attr.test`` holds PROG_TEST_RUN.
    """
    _anonymous_ = ("_create", "_elem", "_load", "_obj", "_getid")
    _fields_ = [("_create", MapCreateAttr), ("_elem", MapElemAttr), ("batch", MapBatchAttr),
                ("_load", ProgLoadAttr), ("_obj", ObjAttr), ("test", TestRunAttr),
                ("_getid", GetIdAttr), ("info", InfoAttr), ("_raw", ctypes.c_uint8 * 160)]


class bpf_map_info(ctypes.Structure):
    """``struct bpf_map_info``, filled by OBJ_GET_INFO_BY_FD."""
    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32),
                ("name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("ifindex", u32),
                ("btf_vmlinux_value_type_id", u32), ("netns_dev", u64), ("netns_ino", u64),
                ("btf_id", u32), ("btf_key_type_id", u32), ("btf_value_type_id", u32),
                ("btf_vmlinux_id", u32), ("map_extra", u64)]


BPF_TAG_SIZE = 8


class bpf_prog_info(ctypes.Structure):
    """``struct bpf_prog_info``, filled by OBJ_GET_INFO_BY_FD on a program fd.

    The caller sets ``xlated_prog_len`` / ``xlated_prog_insns`` and
    ``nr_map_ids`` / ``map_ids`` to name its buffers; the kernel fills them
    and reports the full sizes in the same fields.
    """
    _fields_ = [("type", u32), ("id", u32), ("tag", ctypes.c_uint8 * BPF_TAG_SIZE),
                ("jited_prog_len", u32), ("xlated_prog_len", u32),
                ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
                ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32),
                ("map_ids", u64), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
                ("ifindex", u32), ("gpl_compatible", u32, 1), ("_pad", u32, 31),
                ("netns_dev", u64), ("netns_ino", u64),
                ("nr_jited_ksyms", u32), ("nr_jited_func_lens", u32),
                ("jited_ksyms", u64), ("jited_func_lens", u64),
                ("btf_id", u32), ("func_info_rec_size", u32), ("func_info", u64),
                ("nr_func_info", u32), ("nr_line_info", u32), ("line_info", u64),
                ("jited_line_info", u64), ("nr_jited_line_info", u32),
                ("line_info_rec_size", u32), ("jited_line_info_rec_size", u32),
                ("nr_prog_tags", u32), ("prog_tags", u64), ("run_time_ns", u64),
                ("run_cnt", u64), ("recursion_misses", u64), ("verified_insns", u32),
                ("attach_btf_obj_id", u32), ("attach_btf_id", u32), ("_pad2", u32)]


def read(addr: int, size: int) -> Optional[bytes]:
    """The ``size`` bytes a user pointer names (None for NULL)."""
    return None if not addr else ctypes.string_at(addr, size)


def write(addr: int, data: bytes) -> None:
    """Copy ``data`` out to a user pointer, as copy_to_user does."""
    if addr and data:
        ctypes.memmove(addr, data, len(data))


def c_string(addr: int) -> Optional[str]:
    return None if not addr else ctypes.string_at(addr).decode()


def fields(struct: ctypes.Structure) -> Dict[str, object]:
    """A ctypes structure as a dict of its (non-private) fields."""
    out = {}
    for name, *_ in struct._fields_:
        if name.startswith("_"):
            sub = getattr(struct, name)
            if isinstance(sub, (ctypes.Structure, ctypes.Union)):
                out.update(fields(sub))
            continue
        out[name] = getattr(struct, name)
    return out
