"""The one fake in-memory kernel of the unit tests (Object mechanics, walks
over corrupt lists, trees and arrays built on purpose): flat little-endian
memory from ``BASE``, the types a test declares by ``(kind, name)``, the
x86_64 arch (word size), per-CPU offsets, a ``cache`` and ``warn`` recording into
``warnings`` -- just enough of a :class:`kql.kernel.Kernel` for
:class:`kql.object.Object` and the helpers.  A read outside the memory
raises FaultError, as an address missing from a dump does."""

from __future__ import annotations

import struct

from kql.arch.x86_64 import ARCH
from kql.errors import FaultError
from kql.types import Member, Type, TypeSourceBase, builtin_type, pointer_to

__all__ = ["FakeKernel", "list_types"]


class FakeKernel:
    BASE = 0x10000
    arch = ARCH

    def __init__(self, mem: "bytes | int", named: dict | None = None):
        """``mem``: the memory's bytes, or its size (zeroed); ``named``:
        ``{("struct", "node"): Type, ...}`` (more can be added to ``named``)."""
        self.mem = bytearray(mem)
        self.named = dict(named or {})
        self.cache: dict = {}
        self.warnings: list[str] = []
        fake = self

        class Types(TypeSourceBase):
            def _find_named(self, kind, name):
                return fake.named.get((kind, name))

        self.types = Types()

    # -- memory ------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.BASE
        if off < 0 or off + size > len(self.mem):
            raise FaultError(addr, f"cannot read {addr:#x}")
        return bytes(self.mem[off:off + size])

    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def read_u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_s32(self, addr: int) -> int:
        return struct.unpack("<i", self.read(addr, 4))[0]

    def read_pointer(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def put(self, addr: int, value: int, fmt: str = "<Q") -> None:
        """Write ``value`` at ``addr`` (a u64 unless ``fmt`` says otherwise)."""
        struct.pack_into(fmt, self.mem, addr - self.BASE, value)

    # -- CPUs: per-CPU copies sit at the address plus the CPU's offset ----------------
    per_cpu_offsets: tuple[int, ...] = (0,)

    def possible_cpus(self) -> list[int]:
        return list(range(len(self.per_cpu_offsets)))

    online_cpus = possible_cpus

    def per_cpu_address(self, addr: int, cpu: int) -> int:
        return addr + self.per_cpu_offsets[cpu]

    # -- what helpers record -----------------------------------------------------------
    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def list_types() -> dict:
    """``struct list_head``, ``struct hlist_node`` and ``struct item { int id;
    struct list_head node @8; }`` for list tests."""
    lh = Type("struct", "list_head", 16)
    lh._members = [Member("next", pointer_to(lh), 0), Member("prev", pointer_to(lh), 64)]
    hn = Type("struct", "hlist_node", 16)
    hn._members = [Member("next", pointer_to(hn), 0),
                   Member("pprev", pointer_to(pointer_to(hn)), 64)]
    item = Type("struct", "item", 24, members=[Member("id", builtin_type("int"), 0),
                                               Member("node", lh, 64)])
    return {("struct", "list_head"): lh, ("struct", "item"): item, ("struct", "hlist_node"): hn}
