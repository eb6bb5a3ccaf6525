"""sockets and net_devices: crash ``net -s`` and ``net``."""

from __future__ import annotations

from functools import cached_property


from kql.errors import FaultError
from kql.helpers.list import walk_warn
from kql.helpers.net import (
    _sock_ptr, for_each_net, for_each_netdev, for_each_socket, init_net,
    netdev_ipv4_addresses, netdev_ipv6_addresses, netdev_mac, sock_family, sock_i_ino,
    sock_local, sock_protocol, sock_remote, sock_state_name, sock_type, socket_owners,
    task_sockets, IFF_UP,
)
from kql.helpers.pid import find_task
from kql.tables.base import (ADDRESS, BOOL, Column, INT32, INT64, STRING, STRING_LIST,
                            ScanContext, TableSpec)

__all__ = ["TABLES"]


class SockRow:
    """One (socket, owning fd) pair; a socket no process has open is one row
    with NULL pid and fd."""


    def __init__(self, sk, pid, fd):
        self.sk = sk                # struct sock *
        self.pid = pid
        self.fd = fd

    @cached_property
    def local(self):
        return sock_local(self.sk)

    @cached_property
    def remote(self):
        return sock_remote(self.sk)


def _socket_rows(ctx: ScanContext):
    kernel = ctx.kernel
    try:
        owners = socket_owners(kernel)
    except (FaultError, LookupError) as e:
        walk_warn(kernel, f"sockets: process fd tables unreadable: {e}")
        owners = {}
    done = set()
    for sk in for_each_socket(kernel):
        a = sk.value_()
        done.add(a)
        for pid, fd in owners.get(a) or [(None, None)]:
            yield SockRow(sk, pid, fd)
    # sockets open in some process but in none of the hash tables walked
    # (netlink, packet, raw, unbound inet sockets ...)
    for a, owned in owners.items():
        if a not in done:
            sk = _sock_ptr(kernel, a)
            for pid, fd in owned:
                yield SockRow(sk, pid, fd)


def _by_pid(ctx: ScanContext, values: list):
    """``pid = N``: only process N's fd table (a process id, as the pid column)."""
    kernel = ctx.kernel
    for v in dict.fromkeys(values):
        if not isinstance(v, int) or not 0 < v < 1 << 31:
            continue
        try:
            task = find_task(kernel, v)
            if not task.value_() or task.tgid.value_() != v:
                continue
            socks = list(task_sockets(task))
        except FaultError as e:
            walk_warn(kernel, f"sockets: fd table of pid {v} unreadable: {e}")
            continue
        for fd, sk in socks:
            yield SockRow(sk, v, fd)


class DevRow:
    __slots__ = ("dev", "net")

    def __init__(self, dev, net):
        self.dev = dev              # struct net_device *
        self.net = net              # struct net *


def _dev_rows(ctx: ScanContext):
    kernel = ctx.kernel
    first = init_net(kernel).value_()
    try:
        nets = list(for_each_net(kernel))
    except (FaultError, LookupError) as e:
        walk_warn(kernel, f"net_devices: net_namespace_list unreadable: {e}")
        nets = [init_net(kernel)]
    nets.sort(key=lambda n: n.value_() != first)      # init_net first
    for net in nets:
        for dev in for_each_netdev(net):
            yield DevRow(dev, net)


def _addresses(r: DevRow) -> list[str]:
    return netdev_ipv4_addresses(r.dev) + netdev_ipv6_addresses(r.dev)


SOCKETS = TableSpec(
    name="sockets",
    doc="One row per socket and owning file descriptor, like crash `net -s`: TCP "
        "(listening, established, time-wait) and UDP over IPv4/IPv6 from the kernel's "
        "hash tables (/proc/net/tcp, tcp6, udp, udp6), UNIX sockets from each "
        "namespace's unix table (/proc/net/unix), plus any other socket a process has "
        "open.  Owners come from every process's fd table; a socket nobody has open "
        "has NULL pid and fd, one open twice has two rows.",
    object_column="sock",
    walk="tcp_hashinfo lhash2 + ehash, udp_table, net->unx.table of every net; "
         "fd tables of every process (socket_file_ops files)",
    rows=_socket_rows,
    lookups={"pid": _by_pid},
    examples=("SELECT pid, fd, protocol, local_addr, local_port FROM sockets "
              "WHERE state = 'LISTEN'",),
    columns=(
        Column("pid", INT32, "process (tgid) with the socket open; NULL if none",
               lambda r: r.pid),
        Column("fd", INT32, "its file descriptor in that process", lambda r: r.fd),
        Column("sock", ADDRESS, "the socket (struct sock *; time-wait and request "
               "sockets share only its __sk_common)", lambda r: r.sk.value_(),
               object_type="struct sock *"),
        Column("family", STRING, "address family: INET, INET6, UNIX, NETLINK, ...",
               lambda r: sock_family(r.sk)),
        Column("type", STRING, "STREAM, DGRAM, RAW, SEQPACKET, ... (sk_type)",
               lambda r: sock_type(r.sk)),
        Column("protocol", STRING, "TCP, UDP, UDPLITE, ... for inet sockets "
               "(sk_protocol); the family (UNIX, NETLINK, ...) for others",
               lambda r: sock_protocol(r.sk)),
        Column("state", STRING, "LISTEN, ESTABLISHED, CLOSE, TIME_WAIT, ... "
               "(sk_state, as /proc/net/tcp's st; unbound/unconnected UDP is CLOSE)",
               lambda r: sock_state_name(r.sk)),
        Column("local_addr", STRING, "bound address (sk_rcv_saddr; 0.0.0.0 or :: "
               "for any); the bound path for UNIX sockets ('@' starts an abstract name)",
               lambda r: r.local[0]),
        Column("local_port", INT32, "bound port (sk_num); NULL for UNIX",
               lambda r: r.local[1]),
        Column("remote_addr", STRING, "peer address (sk_daddr); for UNIX the "
               "peer's bound path", lambda r: r.remote[0]),
        Column("remote_port", INT32, "peer port (sk_dport, host order); 0 when "
               "unconnected; NULL for UNIX", lambda r: r.remote[1]),
        Column("ino", INT64, "socket inode number (sock_i_ino(), as in /proc/net/* "
               "and socket:[ino] fd links); 0 without a struct socket",
               lambda r: sock_i_ino(r.sk)),
    ),
)

NET_DEVICES = TableSpec(
    name="net_devices",
    doc="One row per network device of every namespace (init_net first, each in "
        "dev_base_head order, as /proc/net/dev lists them), like crash `net`.",
    object_column="net_device",
    walk="net_namespace_list, then each net's dev_base_head",
    rows=_dev_rows,
    examples=("SELECT name, mac, addresses FROM net_devices WHERE up",),
    columns=(
        Column("net_device", ADDRESS, "the device (struct net_device *)",
               lambda r: r.dev.value_(), object_type="struct net_device *"),
        Column("name", STRING, "interface name (dev->name)",
               lambda r: r.dev.name.string_().decode(errors="replace")),
        Column("ifindex", INT32, "interface index", lambda r: r.dev.ifindex.value_()),
        Column("mtu", INT64, "MTU in bytes", lambda r: r.dev.mtu.value_()),
        Column("up", BOOL, "administratively up (IFF_UP in dev->flags)",
               lambda r: bool(r.dev.flags.value_() & IFF_UP)),
        Column("mac", STRING, "hardware address aa:bb:.. (dev->dev_addr); NULL if none",
               lambda r: netdev_mac(r.dev)),
        Column("addresses", STRING_LIST, "IPv4 then IPv6 addresses with prefix "
               "length (a.b.c.d/24, fe80::1/64)", _addresses),
        Column("flags", INT64, "dev->flags (IFF_* bits)",
               lambda r: r.dev.flags.value_()),
        Column("netns", ADDRESS, "the namespace (struct net *)", lambda r: r.net.value_()),
    ),
)

TABLES = (SOCKETS, NET_DEVICES)
