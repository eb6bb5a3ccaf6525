"""Networking: network namespaces, devices and sockets (include/net/sock.h,
include/net/inet_hashtables.h, include/net/udp.h, net/unix/af_unix.c,
include/linux/netdevice.h).

Sockets are found where /proc/net/* finds them: TCP in the inet hash tables
(``tcp_hashinfo``: listening sockets in ``lhash2``, established, time-wait and
request sockets in ``ehash``), UDP in ``udp_table`` (and ``udplite_table``),
UNIX sockets in each namespace's ``net->unx.table``.  Their owners come from
every process's open files (:func:`socket_owners`).

Every walk is bounded and cycle-safe: a node seen twice or an unreadable node
ends that chain with a warning on the kernel (``kernel.warn``).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, list_for_each_entry, walk_warn
from kql.helpers.fs import for_each_file
from kql.helpers.pid import for_each_task_and_pid
from kql.object import Object
from kql.types import pointer_to

__all__ = [
    "for_each_net", "for_each_netdev", "netdev_ipv4_addresses", "netdev_ipv6_addresses",
    "netdev_mac", "for_each_tcp_sock", "for_each_udp_sock", "for_each_unix_sock",
    "for_each_socket", "sock_i_ino", "sock_family", "sock_type", "sock_protocol",
    "sock_state", "sock_state_name", "tcp_state_names", "init_net", "socket_ino",
    "sock_local", "sock_remote", "unix_sock_path", "socket_owners", "task_sockets",
    "AF_NAMES", "SOCK_TYPES", "IPPROTO_NAMES", "IFF_UP",
]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "net_namespace_list":  "struct list_head",
    "init_net":            "struct net",
}

# include/linux/socket.h address families (user ABI, stable since they were added).
AF_NAMES = {1: "UNIX", 2: "INET", 3: "AX25", 4: "IPX", 5: "APPLETALK", 9: "X25",
            10: "INET6", 15: "KEY", 16: "NETLINK", 17: "PACKET", 29: "CAN",
            31: "BLUETOOTH", 38: "ALG", 40: "VSOCK", 44: "XDP", 45: "MCTP"}
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
# include/linux/net.h enum sock_type (user ABI; a #define-like enum kept out of BTF).
SOCK_TYPES = {1: "STREAM", 2: "DGRAM", 3: "RAW", 4: "RDM", 5: "SEQPACKET", 6: "DCCP",
              10: "PACKET"}
# include/uapi/linux/in.h IPPROTO_* (user ABI).
IPPROTO_NAMES = {0: "IP", 1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 33: "DCCP",
                 58: "ICMPV6", 132: "SCTP", 136: "UDPLITE", 255: "RAW", 262: "MPTCP"}
# include/uapi/linux/if.h
IFF_UP = 0x1

# include/net/af_unix.h UNIX_HASH_SIZE (a #define, not in BTF).  Since Linux
# 5.19 (commit 79b05beaa5c3 "af_unix: Define a per-netns hash table.") each
# net has a table of 256 * 2 buckets; before, the global unix_socket_table had
# 2 * 256 (since 3.4, commit 7123aaa3a140 "af_unix: speedup /proc/net/unix").
_UNIX_NET_BUCKETS = 512
_UNIX_GLOBAL_BUCKETS = 512
# TCP states that are not full sockets in ehash (include/net/tcp_states.h).
TCP_TIME_WAIT = 6
TCP_NEW_SYN_RECV = 12
TCP_SYN_RECV = 3

_CHAIN_LIMIT = 1_000_000


# -- namespaces and devices -----------------------------------------------------------

def for_each_net(kernel) -> Iterator[Object]:
    """Every network namespace (``for_each_net``), ``init_net`` first.

    :return: iterator of ``struct net *``
    """
    head = kernel.var("net_namespace_list").address_of_()
    yield from list_for_each_entry("struct net", head, "list")


def init_net(kernel) -> Object:
    """``&init_net``.

    :return: ``struct net *``
    """
    return kernel.var("init_net").address_of_()


def for_each_netdev(net: Object) -> Iterator[Object]:
    """The devices of a namespace in ``dev_base_head`` order (``for_each_netdev``,
    the order of /proc/net/dev).

    :param net: ``struct net *``
    :return: iterator of ``struct net_device *``
    """
    yield from list_for_each_entry("struct net_device", net.dev_base_head.address_of_(),
                                   "dev_list")


def netdev_mac(dev: Object) -> str | None:
    """The hardware address as ``aa:bb:..`` (``dev->dev_addr``, ``addr_len``
    bytes); None when the device has none.

    :param dev: ``struct net_device *``
    """
    n = dev.addr_len.value_()
    addr = dev.dev_addr.value_()
    if not n or not addr:
        return None
    return ":".join(f"{b:02x}" for b in dev.prog_.read(addr, n))


def netdev_ipv4_addresses(dev: Object) -> list[str]:
    """IPv4 addresses as ``a.b.c.d/prefix`` (``in_dev->ifa_list``, primary first).

    :param dev: ``struct net_device *``
    """
    out = []
    in_dev = dev.ip_ptr
    if not in_dev.value_():
        return out
    ifa = in_dev.ifa_list
    seen = set()
    while ifa.value_() and ifa.value_() not in seen and len(seen) < 4096:
        seen.add(ifa.value_())
        raw = ifa.ifa_local.value_().to_bytes(4, "little")
        out.append(f"{ipaddress.IPv4Address(raw)}/{ifa.ifa_prefixlen.value_()}")
        ifa = ifa.ifa_next
    if ifa.value_() in seen:
        walk_warn(dev.prog_, f"netdev_ipv4_addresses: cycle in ifa_list at {ifa.value_():#x}")
    return out


def netdev_ipv6_addresses(dev: Object) -> list[str]:
    """IPv6 addresses as ``addr/prefix`` (``inet6_dev->addr_list``).

    :param dev: ``struct net_device *``
    """
    out = []
    idev = dev.ip6_ptr
    if not idev.value_():
        return out
    for ifa in list_for_each_entry("struct inet6_ifaddr", idev.addr_list.address_of_(),
                                   "if_list"):
        raw = dev.prog_.read(ifa.addr.address_, 16)
        out.append(f"{ipaddress.IPv6Address(raw)}/{ifa.prefix_len.value_()}")
    return out


# -- hash chains -------------------------------------------------------------------------

def _chains(kernel, base: int, count: int, stride: int, what: str) -> Iterator[int]:
    """The first-node pointers of ``count`` hash buckets at ``base`` (``stride``
    bytes apart, the head pointer at the start of each), read in large chunks;
    empty buckets (NULL, or an odd hlist_nulls marker) are skipped."""
    step = max(1, (1 << 20) // stride)
    word = kernel.arch.pointer_size
    head = struct.Struct("<Q" if word == 8 else "<I")
    for start in range(0, count, step):
        n = min(step, count - start)
        try:
            raw = kernel.read(base + start * stride, (n - 1) * stride + word)
        except FaultError as e:
            walk_warn(kernel, f"{what}: buckets {start}..{start + n - 1} at {base:#x} "
                            f"unreadable: {e}")
            continue
        for i in range(n):
            (first,) = head.unpack_from(raw, i * stride)
            if first and not first & 1:
                yield first


def _chain(kernel, first: int, what: str) -> Iterator[int]:
    """Nodes of an hlist / hlist_nulls chain from its first node (``next`` at
    offset 0; the chain ends at NULL or an odd nulls marker)."""
    seen = set()
    pos = first
    while pos and not pos & 1:
        if pos in seen:
            walk_warn(kernel, f"{what}: cycle at node {pos:#x}")
            return
        if len(seen) >= _CHAIN_LIMIT:
            walk_warn(kernel, f"{what}: chain longer than {_CHAIN_LIMIT} nodes; stopped")
            return
        seen.add(pos)
        try:
            nxt = kernel.read_pointer(pos)
        except FaultError as e:
            walk_warn(kernel, f"{what}: node {pos:#x} unreadable: {e}")
            return
        yield pos
        pos = nxt


def _sock_ptr(kernel, addr: int) -> Object:
    pt = kernel.cache.get("sock_ptr_type")
    if pt is None:
        pt = kernel.cache["sock_ptr_type"] = pointer_to(kernel.types.find_type("struct sock"))
    return _ptr(kernel, pt, addr)


def _node_offset(kernel) -> int:
    """offsetof(struct sock, __sk_common.skc_node) (== skc_nulls_node)."""
    off = kernel.cache.get("sock_node_offset")
    if off is None:
        off = kernel.cache["sock_node_offset"] = \
            kernel.types.find_type("struct sock").offsetof("__sk_common.skc_node")
    return off


def _walk_table(kernel, base: int, count: int, stride: int, what: str) -> Iterator[Object]:
    off = _node_offset(kernel)
    for first in _chains(kernel, base, count, stride, what):
        for node in _chain(kernel, first, what):
            yield _sock_ptr(kernel, node - off)


# -- TCP ---------------------------------------------------------------------------------

def _inet_hashinfos(kernel) -> list[int]:
    """Addresses of the distinct ``struct inet_hashinfo`` of TCP: ``tcp_hashinfo``
    and any per-netns table."""
    out = []
    sym = kernel.symbols.get("tcp_hashinfo")
    if sym is not None:
        out.append(sym.address)
    try:
        dr = kernel.types.find_type("struct inet_timewait_death_row")
        # Since Linux 6.1 (commit d1e5e6408b30 "tcp: Introduce optional per-netns
        # ehash.") a namespace may have its own table: net->ipv4.tcp_death_row.hashinfo.
        if dr.has_member("hashinfo"):
            for net in for_each_net(kernel):
                dr_obj = net.ipv4.tcp_death_row
                if dr_obj.type_.strip_typedefs().kind == "pointer":
                    dr_obj = dr_obj.deref_()
                h = dr_obj.hashinfo.value_()
                if h and h not in out:
                    out.append(h)
    except (FaultError, LookupError) as e:
        walk_warn(kernel, f"for_each_tcp_sock: per-netns TCP tables unreadable: {e}")
    return out


def for_each_tcp_sock(kernel) -> Iterator[Object]:
    """Every TCP socket in the inet hash tables (IPv4 and IPv6): listening
    sockets, then established, time-wait and request sockets, as /proc/net/tcp
    and tcp6 list them.  Time-wait (``struct inet_timewait_sock``) and request
    (``struct request_sock``) entries share only ``struct sock_common`` with a
    full socket: check :func:`sock_state` before reading further.

    :return: iterator of ``struct sock *``
    """
    ht = kernel.types.find_type("struct inet_hashinfo")
    lb = kernel.types.find_type("struct inet_listen_hashbucket")
    for addr in _inet_hashinfos(kernel):
        h = Object(kernel, ht, addr).read_()
        head_off = lb.offsetof("nulls_head" if lb.has_member("nulls_head") else "head")
        # Since Linux 5.19 (commit cae3873c5b3a "net: inet: Retire port only
        # listening_hash") listeners are only in lhash2, chained by
        # sk_nulls_node; before, each is also in listening_hash, chained by
        # sk_nulls_node (sk_node before 4.x's hlist_nulls), walked instead.
        if ht.has_member("listening_hash"):
            lh = h.listening_hash
            yield from _walk_table(kernel, addr + ht.offsetof("listening_hash") + head_off,
                                   len(lh), lb.size, "tcp listening_hash")
        else:
            yield from _walk_table(kernel, h.lhash2.value_() + head_off,
                                   h.lhash2_mask.value_() + 1, lb.size, "tcp lhash2")
        eb = kernel.types.find_type("struct inet_ehash_bucket")
        yield from _walk_table(kernel, h.ehash.value_(), h.ehash_mask.value_() + 1, eb.size,
                               "tcp ehash")


# -- UDP ---------------------------------------------------------------------------------

def _udp_tables(kernel) -> list[int]:
    out = []
    for name in ("udp_table", "udplite_table"):
        sym = kernel.symbols.get(name)
        if sym is not None:
            out.append(sym.address)
    # Since Linux 6.2 (commit ba6aac151302 "udp: Introduce optional per-netns
    # hash table.") a namespace may have its own net->ipv4.udp_table.
    try:
        if kernel.types.find_type("struct netns_ipv4").has_member("udp_table"):
            for net in for_each_net(kernel):
                t = net.ipv4.udp_table.value_()
                if t and t not in out:
                    out.append(t)
    except (FaultError, LookupError) as e:
        walk_warn(kernel, f"for_each_udp_sock: per-netns UDP tables unreadable: {e}")
    return out


def for_each_udp_sock(kernel) -> Iterator[Object]:
    """Every bound UDP and UDP-Lite socket (IPv4 and IPv6) in the port hash
    (``udp_table.hash``, chained by ``sk_node``), as /proc/net/udp, udp6 list them.

    :return: iterator of ``struct sock *``
    """
    ut = kernel.types.find_type("struct udp_table")
    hs = kernel.types.find_type("struct udp_hslot")
    head_off = hs.offsetof("head")
    for addr in _udp_tables(kernel):
        t = Object(kernel, ut, addr).read_()
        yield from _walk_table(kernel, t.hash.value_() + head_off, t.mask.value_() + 1,
                               hs.size, "udp hash")


# -- UNIX --------------------------------------------------------------------------------

def for_each_unix_sock(kernel) -> Iterator[Object]:
    """Every UNIX socket in the hash tables (bound and unbound), as
    /proc/net/unix lists them.

    :return: iterator of ``struct sock *``
    """
    net_t = kernel.types.find_type("struct net")
    head = kernel.types.find_type("struct hlist_head").size     # one pointer
    # Since Linux commit cf2f225e2653 ("af_unix: Put a socket into a per-netns
    # hash table.") each netns has its own table; before, unix_socket_table.
    if net_t.has_member("unx") and \
            kernel.types.find_type("struct netns_unix").has_member("table"):
        for net in for_each_net(kernel):
            buckets = net.unx.table.buckets.value_()
            if buckets:
                yield from _walk_table(kernel, buckets, _UNIX_NET_BUCKETS, head, "unix table")
        return
    sym = kernel.symbols.get("unix_socket_table")
    if sym is not None:
        n = _UNIX_GLOBAL_BUCKETS
        if sym.size and sym.size // head < n:
            n = sym.size // head
        yield from _walk_table(kernel, sym.address, n, head, "unix_socket_table")


def for_each_socket(kernel) -> Iterator[Object]:
    """TCP, UDP and UNIX sockets of the hash tables, each once.

    :return: iterator of ``struct sock *``
    """
    seen = set()
    for gen in (for_each_tcp_sock, for_each_udp_sock, for_each_unix_sock):
        try:
            for sk in gen(kernel):
                a = sk.value_()
                if a not in seen:
                    seen.add(a)
                    yield sk
        except (FaultError, LookupError) as e:
            walk_warn(kernel, f"for_each_socket: {gen.__name__}: {e}")


# -- socket facts -------------------------------------------------------------------------

def _common(sk: Object) -> Object:
    return sk.member_("__sk_common")


def sock_state(sk: Object) -> int:
    """``sk->sk_state`` (a TCP state number, include/net/tcp_states.h).

    :param sk: ``struct sock *``
    """
    return _common(sk).skc_state.value_()


def _is_full_sock(sk: Object) -> bool:
    """``sk_fullsock()``: not a time-wait or request socket."""
    return sock_state(sk) not in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV)


def sock_family(sk: Object) -> str:
    """'INET', 'INET6', 'UNIX', 'NETLINK', ... (``sk->sk_family``).

    :param sk: ``struct sock *``
    """
    fam = _common(sk).skc_family.value_()
    return AF_NAMES.get(fam, str(fam))


def sock_type(sk: Object) -> str:
    """'STREAM', 'DGRAM', 'RAW', 'SEQPACKET', ... (``sk->sk_type``).

    :param sk: ``struct sock *``
    """
    if not _is_full_sock(sk):
        return "STREAM"
    t = sk.sk_type.value_()
    return SOCK_TYPES.get(t, str(t))


def sock_protocol(sk: Object) -> str:
    """'TCP', 'UDP', 'UDPLITE', ... for inet sockets (``sk->sk_protocol``), the
    family name for others ('UNIX', 'NETLINK', ...).

    :param sk: ``struct sock *``
    """
    fam = _common(sk).skc_family.value_()
    if not _is_full_sock(sk):
        return "TCP"
    if fam in (AF_INET, AF_INET6):
        p = sk.sk_protocol.value_()
        return IPPROTO_NAMES.get(p, str(p))
    return AF_NAMES.get(fam, str(fam))


def tcp_state_names(kernel) -> dict[int, str]:
    """``{TCP_ESTABLISHED: 'ESTABLISHED', ...}`` from the kernel's own enum."""
    names = kernel.cache.get("tcp_state_names")
    if names is None:
        names = {}
        try:
            t, _ = kernel.btf.find_enumerator("TCP_ESTABLISHED")
            names = {v: n[4:] for n, v in t.enumerators if n != "TCP_MAX_STATES"}
        except (AttributeError, TypeError, LookupError):
            pass
        if not names:     # include/net/tcp_states.h (stable since 2.6)
            names = dict(enumerate(("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",
                                    "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
                                    "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")))
        kernel.cache["tcp_state_names"] = names
    return names


def sock_state_name(sk: Object) -> str:
    """'LISTEN', 'ESTABLISHED', 'CLOSE', ... as /proc/net/tcp's ``st`` (a
    request socket, TCP_NEW_SYN_RECV, is shown as SYN_RECV there).

    :param sk: ``struct sock *``
    """
    st = sock_state(sk)
    if st == TCP_NEW_SYN_RECV:
        st = TCP_SYN_RECV
    return tcp_state_names(sk.prog_).get(st, str(st))


def _ip(kernel, common: Object, v4: str, v6: str, fam: int) -> str:
    if fam == AF_INET:
        return str(ipaddress.IPv4Address(common.member_(v4).value_().to_bytes(4, "little")))
    return str(ipaddress.IPv6Address(kernel.read(common.member_(v6).address_, 16)))


def sock_local(sk: Object) -> tuple[str | None, int | None]:
    """``(address, port)`` the socket is bound to: inet ``sk_rcv_saddr`` and
    ``sk_num``; for UNIX sockets the bound path (``@name`` for abstract names)
    and no port.

    :param sk: ``struct sock *``
    """
    c = _common(sk)
    fam = c.skc_family.value_()
    if fam in (AF_INET, AF_INET6):
        return _ip(sk.prog_, c, "skc_rcv_saddr", "skc_v6_rcv_saddr", fam), c.skc_num.value_()
    if fam == AF_UNIX:
        return unix_sock_path(sk), None
    return None, None


def sock_remote(sk: Object) -> tuple[str | None, int | None]:
    """``(address, port)`` of the peer: inet ``sk_daddr``, ``ntohs(sk_dport)``;
    for UNIX sockets the peer's bound path (None if it has none).

    :param sk: ``struct sock *``
    """
    c = _common(sk)
    fam = c.skc_family.value_()
    if fam in (AF_INET, AF_INET6):
        port = c.skc_dport.value_()
        return (_ip(sk.prog_, c, "skc_daddr", "skc_v6_daddr", fam),
                ((port & 0xFF) << 8) | (port >> 8))
    if fam == AF_UNIX:
        peer = _unix_sock(sk).peer.value_()
        return (unix_sock_path(_sock_ptr(sk.prog_, peer)) if peer else None), None
    return None, None


def _unix_sock(sk: Object) -> Object:
    return sk.cast_(pointer_to(sk.prog_.types.find_type("struct unix_sock")))


def unix_sock_path(sk: Object) -> str | None:
    """The name a UNIX socket is bound to, as /proc/net/unix prints it
    (``@`` for an abstract name's leading NUL); None if unbound.

    :param sk: ``struct sock *`` of an AF_UNIX socket
    """
    kernel = sk.prog_
    addr = _unix_sock(sk).addr.value_()
    if not addr:
        return None
    ua = Object(kernel, "struct unix_address", addr)
    # len counts sun_family (2 bytes) before sun_path
    n = ua.len.value_() - 2
    if n <= 0:
        return None
    raw = kernel.read(ua.name.address_ + 2, min(n, 108))
    if raw[:1] == b"\0":
        return "@" + raw[1:].decode(errors="replace").replace("\0", "@")
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def sock_i_ino(sk: Object) -> int:
    """``sock_i_ino()``: the socket's inode number (0 without a ``struct socket``).

    :param sk: ``struct sock *``
    """
    if not _is_full_sock(sk):
        return 0
    sock = sk.sk_socket.value_()
    return socket_ino(sk.prog_, sock) if sock else 0


def socket_ino(kernel, sock: int) -> int:
    """``SOCK_INODE(sock)->i_ino``.

    :param sock: address of a ``struct socket`` (inside a ``struct socket_alloc``)
    """
    off = kernel.cache.get("socket_alloc_ino")
    if off is None:
        sa = kernel.types.find_type("struct socket_alloc")
        off = kernel.cache["socket_alloc_ino"] = (
            sa.offsetof("vfs_inode") - sa.offsetof("socket")
            + kernel.types.find_type("struct inode").offsetof("i_ino"))
    return kernel.read_ulong(sock + off)      # unsigned long i_ino


# -- owners ---------------------------------------------------------------------------------

def task_sockets(task: Object) -> Iterator[tuple[int, Object]]:
    """The sockets among a task's open files: ``(fd, struct sock *)`` for each
    file whose ``f_op`` is ``socket_file_ops`` (``file->private_data`` is the
    ``struct socket``).  An unreadable file is skipped with a warning.

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    lay = kernel.cache.get("task_sockets_layout")
    if lay is None:
        sym = kernel.symbols.get("socket_file_ops")
        ft = kernel.types.find_type("struct file")
        lay = kernel.cache["task_sockets_layout"] = (
            sym.address if sym is not None else None, ft.offsetof("f_op"),
            ft.offsetof("private_data"), kernel.types.find_type("struct socket").offsetof("sk"))
    ops, f_op, priv, sk_off = lay
    if ops is None:
        return
    for fd, f in for_each_file(task):
        f = f.value_()
        try:
            if kernel.read_pointer(f + f_op) != ops:
                continue
            sock = kernel.read_pointer(f + priv)
            sk = kernel.read_pointer(sock + sk_off) if sock else 0
        except FaultError as e:
            walk_warn(kernel, f"task_sockets: file {f:#x} (pid {task.tgid.value_()} fd {fd}) "
                            f"unreadable: {e}")
            continue
        if sk:
            yield fd, _sock_ptr(kernel, sk)


def socket_owners(kernel) -> dict[int, list[tuple[int, int]]]:
    """``{struct sock address: [(tgid, fd), ...]}`` for every socket some process
    has open, from the fd tables of every thread-group leader (cached; the pid
    idr supplies the processes a damaged task list hides).  Threads share
    their leader's table; tables seen twice are walked once."""
    owners = kernel.cache.get("socket_owners")
    if owners is not None:
        return owners
    owners = {}
    seen_tables = set()
    for task in for_each_task_and_pid(kernel, leaders_only=True):
        try:
            files = task.files.value_()
            if not files or files in seen_tables:
                continue
            seen_tables.add(files)
            tgid = task.tgid.value_()
            for fd, sk in task_sockets(task):
                owners.setdefault(sk.value_(), []).append((tgid, fd))
        except FaultError as e:
            walk_warn(kernel, f"socket_owners: files of task {task.value_():#x} unreadable: {e}")
    kernel.cache["socket_owners"] = owners
    return owners
