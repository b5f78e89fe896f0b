"""Constants of the kernel's ``include/uapi/linux/bpf.h`` as Python data.

The values follow Linux 6.18 (the running kernel), which is newer than the
6.1 header installed in /usr/include; ``tests/test_uapi.py`` checks that every
enumerator of the installed header has the same value here, and asks the live
kernel to confirm a few of the newer numbers.

Enum member names drop the kernel's common prefix (``BPF_MAP_TYPE_HASH`` is
``MapType.HASH``, ``BPF_FUNC_map_lookup_elem`` is ``Func.map_lookup_elem``).
Every constant is also exported under its exact kernel spelling
(``BPF_MAP_TYPE_HASH``, ``BPF_F_NO_PREALLOC``, ``BPF_FUNC_trace_printk`` ...)
for code that is ported from C; :data:`CONSTANTS` maps those names to values.

Example::

    >>> from userbpf.uapi import Cmd, MapType, Func, MapFlag, helper_name, helper_id
    >>> int(Cmd.MAP_CREATE), int(MapType.RINGBUF), int(Func.ktime_get_ns)
    (0, 27, 5)
    >>> helper_name(Func.trace_printk)
    'bpf_trace_printk'
    >>> helper_id("bpf_map_lookup_elem")
    1
    >>> int(MapFlag.NO_PREALLOC | MapFlag.RDONLY_PROG)
    129
    >>> from userbpf.uapi import BPF_F_CURRENT_CPU, XDP_PASS
    >>> hex(BPF_F_CURRENT_CPU), XDP_PASS
    ('0xffffffff', 2)
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --------------------------------------------------------------------------
# enum bpf_cmd: the first argument of bpf(2).
# --------------------------------------------------------------------------


class Cmd(IntEnum):
    """``enum bpf_cmd`` (``BPF_`` prefix dropped)."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_ATTACH = 8
    PROG_DETACH = 9
    PROG_TEST_RUN = 10
    PROG_RUN = 10  # alias of PROG_TEST_RUN (5.x rename)
    PROG_GET_NEXT_ID = 11
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    PROG_QUERY = 16
    RAW_TRACEPOINT_OPEN = 17
    BTF_LOAD = 18
    BTF_GET_FD_BY_ID = 19
    TASK_FD_QUERY = 20
    MAP_LOOKUP_AND_DELETE_ELEM = 21
    MAP_FREEZE = 22
    BTF_GET_NEXT_ID = 23
    MAP_LOOKUP_BATCH = 24
    MAP_LOOKUP_AND_DELETE_BATCH = 25
    MAP_UPDATE_BATCH = 26
    MAP_DELETE_BATCH = 27
    LINK_CREATE = 28
    LINK_UPDATE = 29
    LINK_GET_FD_BY_ID = 30
    LINK_GET_NEXT_ID = 31
    ENABLE_STATS = 32
    ITER_CREATE = 33
    LINK_DETACH = 34
    PROG_BIND_MAP = 35
    TOKEN_CREATE = 36  # 6.9
    PROG_STREAM_READ_BY_FD = 37  # 6.17


# --------------------------------------------------------------------------
# enum bpf_map_type
# --------------------------------------------------------------------------


class MapType(IntEnum):
    """``enum bpf_map_type`` (``BPF_MAP_TYPE_`` prefix dropped)."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    # 6.2 renamed it; the old name stays as an alias in the header.
    CGROUP_STORAGE_DEPRECATED = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32  # 6.2
    ARENA = 33  # 6.9


# --------------------------------------------------------------------------
# enum bpf_prog_type
# Map types whose values user space sees once per possible CPU, each slot
# rounded up to 8 bytes (bpf_map_value_size).
PERCPU_MAP_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY,
                              MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE})


# --------------------------------------------------------------------------


class ProgType(IntEnum):
    """``enum bpf_prog_type`` (``BPF_PROG_TYPE_`` prefix dropped)."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32  # 6.4


# --------------------------------------------------------------------------
# enum bpf_attach_type
# --------------------------------------------------------------------------


class AttachType(IntEnum):
    """``enum bpf_attach_type`` (``BPF_`` prefix dropped)."""

    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44  # 6.4
    NETFILTER = 45
    TCX_INGRESS = 46  # 6.6
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49  # 6.7
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55
    TRACE_KPROBE_SESSION = 56  # 6.10
    TRACE_UPROBE_SESSION = 57  # 6.13


# --------------------------------------------------------------------------
# enum bpf_link_type
# --------------------------------------------------------------------------


class LinkType(IntEnum):
    """``enum bpf_link_type`` (``BPF_LINK_TYPE_`` prefix dropped)."""

    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10  # 6.4
    TCX = 11  # 6.6
    UPROBE_MULTI = 12
    NETKIT = 13  # 6.7
    SOCKMAP = 14  # 6.10


# --------------------------------------------------------------------------
# enum bpf_func_id: helper ids (the imm of a BPF_CALL with src_reg 0).
# The list has been frozen since 6.2 -- new kernel functionality comes as
# kfuncs -- so cgrp_storage_delete (211) is the last helper.
# --------------------------------------------------------------------------


class Func(IntEnum):
    """``enum bpf_func_id``: member ``x`` is the kernel's ``BPF_FUNC_x``."""

    unspec = 0
    map_lookup_elem = 1
    map_update_elem = 2
    map_delete_elem = 3
    probe_read = 4
    ktime_get_ns = 5
    trace_printk = 6
    get_prandom_u32 = 7
    get_smp_processor_id = 8
    skb_store_bytes = 9
    l3_csum_replace = 10
    l4_csum_replace = 11
    tail_call = 12
    clone_redirect = 13
    get_current_pid_tgid = 14
    get_current_uid_gid = 15
    get_current_comm = 16
    get_cgroup_classid = 17
    skb_vlan_push = 18
    skb_vlan_pop = 19
    skb_get_tunnel_key = 20
    skb_set_tunnel_key = 21
    perf_event_read = 22
    redirect = 23
    get_route_realm = 24
    perf_event_output = 25
    skb_load_bytes = 26
    get_stackid = 27
    csum_diff = 28
    skb_get_tunnel_opt = 29
    skb_set_tunnel_opt = 30
    skb_change_proto = 31
    skb_change_type = 32
    skb_under_cgroup = 33
    get_hash_recalc = 34
    get_current_task = 35
    probe_write_user = 36
    current_task_under_cgroup = 37
    skb_change_tail = 38
    skb_pull_data = 39
    csum_update = 40
    set_hash_invalid = 41
    get_numa_node_id = 42
    skb_change_head = 43
    xdp_adjust_head = 44
    probe_read_str = 45
    get_socket_cookie = 46
    get_socket_uid = 47
    set_hash = 48
    setsockopt = 49
    skb_adjust_room = 50
    redirect_map = 51
    sk_redirect_map = 52
    sock_map_update = 53
    xdp_adjust_meta = 54
    perf_event_read_value = 55
    perf_prog_read_value = 56
    getsockopt = 57
    override_return = 58
    sock_ops_cb_flags_set = 59
    msg_redirect_map = 60
    msg_apply_bytes = 61
    msg_cork_bytes = 62
    msg_pull_data = 63
    bind = 64
    xdp_adjust_tail = 65
    skb_get_xfrm_state = 66
    get_stack = 67
    skb_load_bytes_relative = 68
    fib_lookup = 69
    sock_hash_update = 70
    msg_redirect_hash = 71
    sk_redirect_hash = 72
    lwt_push_encap = 73
    lwt_seg6_store_bytes = 74
    lwt_seg6_adjust_srh = 75
    lwt_seg6_action = 76
    rc_repeat = 77
    rc_keydown = 78
    skb_cgroup_id = 79
    get_current_cgroup_id = 80
    get_local_storage = 81
    sk_select_reuseport = 82
    skb_ancestor_cgroup_id = 83
    sk_lookup_tcp = 84
    sk_lookup_udp = 85
    sk_release = 86
    map_push_elem = 87
    map_pop_elem = 88
    map_peek_elem = 89
    msg_push_data = 90
    msg_pop_data = 91
    rc_pointer_rel = 92
    spin_lock = 93
    spin_unlock = 94
    sk_fullsock = 95
    tcp_sock = 96
    skb_ecn_set_ce = 97
    get_listener_sock = 98
    skc_lookup_tcp = 99
    tcp_check_syncookie = 100
    sysctl_get_name = 101
    sysctl_get_current_value = 102
    sysctl_get_new_value = 103
    sysctl_set_new_value = 104
    strtol = 105
    strtoul = 106
    sk_storage_get = 107
    sk_storage_delete = 108
    send_signal = 109
    tcp_gen_syncookie = 110
    skb_output = 111
    probe_read_user = 112
    probe_read_kernel = 113
    probe_read_user_str = 114
    probe_read_kernel_str = 115
    tcp_send_ack = 116
    send_signal_thread = 117
    jiffies64 = 118
    read_branch_records = 119
    get_ns_current_pid_tgid = 120
    xdp_output = 121
    get_netns_cookie = 122
    get_current_ancestor_cgroup_id = 123
    sk_assign = 124
    ktime_get_boot_ns = 125
    seq_printf = 126
    seq_write = 127
    sk_cgroup_id = 128
    sk_ancestor_cgroup_id = 129
    ringbuf_output = 130
    ringbuf_reserve = 131
    ringbuf_submit = 132
    ringbuf_discard = 133
    ringbuf_query = 134
    csum_level = 135
    skc_to_tcp6_sock = 136
    skc_to_tcp_sock = 137
    skc_to_tcp_timewait_sock = 138
    skc_to_tcp_request_sock = 139
    skc_to_udp6_sock = 140
    get_task_stack = 141
    load_hdr_opt = 142
    store_hdr_opt = 143
    reserve_hdr_opt = 144
    inode_storage_get = 145
    inode_storage_delete = 146
    d_path = 147
    copy_from_user = 148
    snprintf_btf = 149
    seq_printf_btf = 150
    skb_cgroup_classid = 151
    redirect_neigh = 152
    per_cpu_ptr = 153
    this_cpu_ptr = 154
    redirect_peer = 155
    task_storage_get = 156
    task_storage_delete = 157
    get_current_task_btf = 158
    bprm_opts_set = 159
    ktime_get_coarse_ns = 160
    ima_inode_hash = 161
    sock_from_file = 162
    check_mtu = 163
    for_each_map_elem = 164
    snprintf = 165
    sys_bpf = 166
    btf_find_by_name_kind = 167
    sys_close = 168
    timer_init = 169
    timer_set_callback = 170
    timer_start = 171
    timer_cancel = 172
    get_func_ip = 173
    get_attach_cookie = 174
    task_pt_regs = 175
    get_branch_snapshot = 176
    trace_vprintk = 177
    skc_to_unix_sock = 178
    kallsyms_lookup_name = 179
    find_vma = 180
    loop = 181
    strncmp = 182
    get_func_arg = 183
    get_func_ret = 184
    get_func_arg_cnt = 185
    get_retval = 186
    set_retval = 187
    xdp_get_buff_len = 188
    xdp_load_bytes = 189
    xdp_store_bytes = 190
    copy_from_user_task = 191
    skb_set_tstamp = 192
    ima_file_hash = 193
    kptr_xchg = 194
    map_lookup_percpu_elem = 195
    skc_to_mptcp_sock = 196
    dynptr_from_mem = 197
    ringbuf_reserve_dynptr = 198
    ringbuf_submit_dynptr = 199
    ringbuf_discard_dynptr = 200
    dynptr_read = 201
    dynptr_write = 202
    dynptr_data = 203
    tcp_raw_gen_syncookie_ipv4 = 204
    tcp_raw_gen_syncookie_ipv6 = 205
    tcp_raw_check_syncookie_ipv4 = 206
    tcp_raw_check_syncookie_ipv6 = 207
    ktime_get_tai_ns = 208
    user_ringbuf_drain = 209
    cgrp_storage_get = 210  # 6.2
    cgrp_storage_delete = 211  # 6.2


def helper_name(func_id: int) -> str:
    """Return the kernel name of helper ``func_id``, e.g. ``"bpf_map_lookup_elem"``.

    Raises ValueError for an id that is no helper::

        >>> helper_name(5)
        'bpf_ktime_get_ns'
    """
    try:
        return "bpf_" + Func(func_id).name
    except ValueError:
        raise ValueError(
            f"unknown BPF helper id {func_id!r} (helper ids are 0..{max(Func)})"
        ) from None


def helper_id(name: str) -> int:
    """Return the id of helper ``name``; accepts ``"bpf_x"`` and ``"x"``.

    Raises KeyError naming the helper when it does not exist::

        >>> helper_id("bpf_trace_printk"), helper_id("trace_printk")
        (6, 6)
    """
    short = name[4:] if name.startswith("bpf_") else name
    member = Func.__members__.get(short)
    if member is None:
        raise KeyError(f"unknown BPF helper {name!r}")
    return int(member)


# --------------------------------------------------------------------------
# Flag groups (prefix ``BPF_F_`` / ``BPF_`` dropped from member names).
# --------------------------------------------------------------------------


class UpdateFlag(IntFlag):
    """``flags`` of BPF_MAP_UPDATE_ELEM / bpf_map_update_elem().

    ANY, NOEXIST and EXIST are a 2-bit choice, not independent bits;
    LOCK (BPF_F_LOCK) may be or-ed in.
    """

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    LOCK = 4  # BPF_F_LOCK


class MapFlag(IntFlag):
    """``map_flags`` of BPF_MAP_CREATE (``BPF_F_`` prefix dropped)."""

    NO_PREALLOC = 1 << 0
    NO_COMMON_LRU = 1 << 1
    NUMA_NODE = 1 << 2
    RDONLY = 1 << 3
    WRONLY = 1 << 4
    STACK_BUILD_ID = 1 << 5
    ZERO_SEED = 1 << 6
    RDONLY_PROG = 1 << 7
    WRONLY_PROG = 1 << 8
    CLONE = 1 << 9
    MMAPABLE = 1 << 10
    PRESERVE_ELEMS = 1 << 11
    INNER_MAP = 1 << 12
    LINK = 1 << 13
    PATH_FD = 1 << 14
    VTYPE_BTF_OBJ_FD = 1 << 15
    TOKEN_FD = 1 << 16
    SEGV_ON_FAULT = 1 << 17
    NO_USER_CONV = 1 << 18


class ProgFlag(IntFlag):
    """``prog_flags`` of BPF_PROG_LOAD (``BPF_F_`` prefix dropped)."""

    STRICT_ALIGNMENT = 1 << 0
    ANY_ALIGNMENT = 1 << 1
    TEST_RND_HI32 = 1 << 2
    TEST_STATE_FREQ = 1 << 3
    SLEEPABLE = 1 << 4
    XDP_HAS_FRAGS = 1 << 5
    XDP_DEV_BOUND_ONLY = 1 << 6
    TEST_REG_INVARIANTS = 1 << 7
    TOKEN_FD = 1 << 16  # shared with MapFlag.TOKEN_FD


class TestRunFlag(IntFlag):
    """``flags`` of BPF_PROG_TEST_RUN (``BPF_F_`` prefix dropped)."""

    __test__ = False  # not a pytest test class despite the name

    TEST_RUN_ON_CPU = 1 << 0
    TEST_XDP_LIVE_FRAMES = 1 << 1
    TEST_SKB_CHECKSUM_COMPLETE = 1 << 2


class FileFlag(IntFlag):
    """``file_flags`` of BPF_OBJ_PIN / BPF_OBJ_GET / *_GET_FD_BY_ID."""

    RDONLY = 1 << 3
    WRONLY = 1 << 4
    PATH_FD = 1 << 14


class AttachFlag(IntFlag):
    """``attach_flags`` of BPF_PROG_ATTACH and link/mprog flags."""

    ALLOW_OVERRIDE = 1 << 0
    ALLOW_MULTI = 1 << 1
    REPLACE = 1 << 2
    BEFORE = 1 << 3
    AFTER = 1 << 4
    ID = 1 << 5
    PREORDER = 1 << 6  # 6.15
    LINK = 1 << 13  # same bit as MapFlag.LINK


class PerfEventFlag(IntFlag):
    """``flags`` of bpf_perf_event_output/read: CPU index and context size."""

    INDEX_MASK = 0xFFFFFFFF
    CURRENT_CPU = 0xFFFFFFFF  # alias of INDEX_MASK: "this CPU"
    CTXLEN_MASK = 0xFFFFF << 32


class RingbufFlag(IntFlag):
    """``flags`` of bpf_ringbuf_output/submit/discard."""

    NO_WAKEUP = 1 << 0
    FORCE_WAKEUP = 1 << 1


class RingbufQuery(IntEnum):
    """``flags`` of bpf_ringbuf_query()."""

    AVAIL_DATA = 0
    RING_SIZE = 1
    CONS_POS = 2
    PROD_POS = 3


class RingbufHeader(IntEnum):
    """Bits of a ring buffer record header and its size."""

    BUSY_BIT = 1 << 31
    DISCARD_BIT = 1 << 30
    HDR_SZ = 8


class XdpAction(IntEnum):
    """``enum xdp_action``: return values of XDP programs."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class TcAction(IntEnum):
    """``TC_ACT_*`` from linux/pkt_cls.h: return values of tc programs."""

    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7
    TRAP = 8
    JUMP = 1 << 28
    GOTO_CHAIN = 2 << 28


class SkAction(IntEnum):
    """``enum sk_action``: return values of socket (sk_skb/sk_msg...) programs."""

    DROP = 0
    PASS = 1


class StatsType(IntEnum):
    """``enum bpf_stats_type`` for BPF_ENABLE_STATS."""

    RUN_TIME = 0


class StreamId(IntEnum):
    """Stream ids for BPF_PROG_STREAM_READ_BY_FD (``BPF_STREAM_`` dropped)."""

    STDOUT = 1
    STDERR = 2


# Sizes of names and tags in struct bpf_*_info.
BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8
BPF_BUILD_ID_SIZE = 20

# Flags of individual helpers' ``flags`` arguments, by kernel name.  They
# are small per-helper groups in the header; kept as one table here.
HELPER_FLAGS: dict[str, int] = {
    # bpf_skb_store_bytes
    "BPF_F_RECOMPUTE_CSUM": 1 << 0,
    "BPF_F_INVALIDATE_HASH": 1 << 1,
    # bpf_l3_csum_replace / bpf_l4_csum_replace
    "BPF_F_HDR_FIELD_MASK": 0xF,
    "BPF_F_PSEUDO_HDR": 1 << 4,
    "BPF_F_MARK_MANGLED_0": 1 << 5,
    "BPF_F_MARK_ENFORCE": 1 << 6,
    "BPF_F_IPV6": 1 << 7,
    # bpf_skb_set_tunnel_key / get_tunnel_key
    "BPF_F_TUNINFO_IPV6": 1 << 0,
    "BPF_F_ZERO_CSUM_TX": 1 << 1,
    "BPF_F_DONT_FRAGMENT": 1 << 2,
    "BPF_F_SEQ_NUMBER": 1 << 3,
    "BPF_F_NO_TUNNEL_KEY": 1 << 4,
    "BPF_F_TUNINFO_FLAGS": 1 << 4,
    # bpf_get_stackid / bpf_get_stack
    "BPF_F_SKIP_FIELD_MASK": 0xFF,
    "BPF_F_USER_STACK": 1 << 8,
    "BPF_F_FAST_STACK_CMP": 1 << 9,
    "BPF_F_REUSE_STACKID": 1 << 10,
    "BPF_F_USER_BUILD_ID": 1 << 11,
    # bpf_sk_lookup_tcp/udp, bpf_skc_lookup_tcp
    "BPF_F_CURRENT_NETNS": -1,
    # bpf_skb_adjust_room
    "BPF_F_ADJ_ROOM_FIXED_GSO": 1 << 0,
    "BPF_F_ADJ_ROOM_ENCAP_L3_IPV4": 1 << 1,
    "BPF_F_ADJ_ROOM_ENCAP_L3_IPV6": 1 << 2,
    "BPF_F_ADJ_ROOM_ENCAP_L4_GRE": 1 << 3,
    "BPF_F_ADJ_ROOM_ENCAP_L4_UDP": 1 << 4,
    "BPF_F_ADJ_ROOM_NO_CSUM_RESET": 1 << 5,
    "BPF_F_ADJ_ROOM_ENCAP_L2_ETH": 1 << 6,
    "BPF_F_ADJ_ROOM_DECAP_L3_IPV4": 1 << 7,
    "BPF_F_ADJ_ROOM_DECAP_L3_IPV6": 1 << 8,
    "BPF_ADJ_ROOM_ENCAP_L2_MASK": 0xFF,
    "BPF_ADJ_ROOM_ENCAP_L2_SHIFT": 56,
    # bpf_csum_level
    "BPF_CSUM_LEVEL_QUERY": 0,
    "BPF_CSUM_LEVEL_INC": 1,
    "BPF_CSUM_LEVEL_DEC": 2,
    "BPF_CSUM_LEVEL_RESET": 3,
    # bpf_sysctl_get_name
    "BPF_F_SYSCTL_BASE_NAME": 1 << 0,
    # bpf_{sk,inode,task,cgrp}_storage_get
    "BPF_LOCAL_STORAGE_GET_F_CREATE": 1 << 0,
    "BPF_SK_STORAGE_GET_F_CREATE": 1 << 0,
    # bpf_read_branch_records
    "BPF_F_GET_BRANCH_RECORDS_SIZE": 1 << 0,
    # bpf_sk_assign
    "BPF_SK_LOOKUP_F_REPLACE": 1 << 0,
    "BPF_SK_LOOKUP_F_NO_REUSEPORT": 1 << 1,
    # bpf_bprm_opts_set
    "BPF_F_BPRM_SECUREEXEC": 1 << 0,
    # bpf_redirect / bpf_redirect_map / bpf_clone_redirect
    "BPF_F_INGRESS": 1 << 0,
    "BPF_F_BROADCAST": 1 << 3,
    "BPF_F_EXCLUDE_INGRESS": 1 << 4,
    "BPF_F_REDIRECT_FLAGS": (1 << 0) | (1 << 3) | (1 << 4),
    # bpf_timer_start
    "BPF_F_TIMER_ABS": 1 << 0,
    "BPF_F_TIMER_CPU_PIN": 1 << 1,
    # bpf_kfunc flags (bpf_get_stack-like kfuncs)
    "BPF_F_PAD_ZEROS": 1 << 0,
}

# Other BPF_F_* flags that belong to single commands.
COMMAND_FLAGS: dict[str, int] = {
    "BPF_F_QUERY_EFFECTIVE": 1 << 0,  # BPF_PROG_QUERY
    "BPF_F_KPROBE_MULTI_RETURN": 1 << 0,  # LINK_CREATE kprobe_multi
    "BPF_F_UPROBE_MULTI_RETURN": 1 << 0,  # LINK_CREATE uprobe_multi
}


# --------------------------------------------------------------------------
# Kernel spellings.  (kernel prefix, enum) pairs; a member ``M`` of the enum
# is exported as ``prefix + M``.  Aliases are included.
# --------------------------------------------------------------------------

_PREFIXES: tuple[tuple[str, type], ...] = (
    ("BPF_", Cmd),
    ("BPF_MAP_TYPE_", MapType),
    ("BPF_PROG_TYPE_", ProgType),
    ("BPF_", AttachType),
    ("BPF_LINK_TYPE_", LinkType),
    ("BPF_FUNC_", Func),
    ("BPF_F_", MapFlag),
    ("BPF_F_", ProgFlag),
    ("BPF_F_", TestRunFlag),
    ("BPF_F_", FileFlag),
    ("BPF_F_", AttachFlag),
    ("BPF_F_", PerfEventFlag),
    ("BPF_RB_", RingbufFlag),
    ("BPF_RB_", RingbufQuery),
    ("BPF_RINGBUF_", RingbufHeader),
    ("XDP_", XdpAction),
    ("TC_ACT_", TcAction),
    ("SK_", SkAction),
    ("BPF_STATS_", StatsType),
    ("BPF_STREAM_", StreamId),
)

# UpdateFlag mixes BPF_ANY/BPF_NOEXIST/BPF_EXIST with BPF_F_LOCK.
_UPDATE_NAMES = {"ANY": "BPF_ANY", "NOEXIST": "BPF_NOEXIST",
                 "EXIST": "BPF_EXIST", "LOCK": "BPF_F_LOCK"}


def _kernel_names() -> dict[str, int]:
    # Builds the name table once at import; a name exported by two groups
    # (BPF_F_RDONLY, BPF_F_LINK, BPF_F_TOKEN_FD) must agree on its value.
    table: dict[str, int] = {}

    def put(name: str, value: int) -> None:
        if table.setdefault(name, value) != value:
            raise AssertionError(f"{name} defined as {table[name]} and {value}")

    for prefix, enum in _PREFIXES:
        for member_name, member in enum.__members__.items():
            put(prefix + member_name, int(member))
    for member_name, member in UpdateFlag.__members__.items():
        put(_UPDATE_NAMES[member_name], int(member))
    for name, value in (*HELPER_FLAGS.items(), *COMMAND_FLAGS.items()):
        put(name, value)
    put("BPF_OBJ_NAME_LEN", BPF_OBJ_NAME_LEN)
    put("BPF_TAG_SIZE", BPF_TAG_SIZE)
    put("BPF_BUILD_ID_SIZE", BPF_BUILD_ID_SIZE)
    return table


#: Every constant of this module by its kernel name, e.g.
#: ``CONSTANTS["BPF_MAP_TYPE_ARENA"] == 33``.
CONSTANTS: dict[str, int] = _kernel_names()
globals().update(CONSTANTS)

__all__ = [
    "Cmd", "MapType", "ProgType", "AttachType", "LinkType", "Func",
    "helper_name", "helper_id",
    "UpdateFlag", "MapFlag", "ProgFlag", "TestRunFlag", "FileFlag",
    "AttachFlag", "PerfEventFlag", "RingbufFlag", "RingbufQuery",
    "RingbufHeader", "XdpAction", "TcAction", "SkAction", "StatsType",
    "StreamId", "HELPER_FLAGS", "COMMAND_FLAGS", "CONSTANTS", "PERCPU_MAP_TYPES",
    *sorted(CONSTANTS),
]
