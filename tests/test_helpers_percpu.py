"""kql.helpers.percpu on per-CPU data laid out in the fake kernel: the one
percpu_counter_sum (the vm_committed_as and mm RSS counters use it)."""

from fakekernel import FakeKernel
from kql.helpers.percpu import per_cpu_ptr, percpu_counter_sum
from kql.object import Object
from kql.types import Member, Type, builtin_type, pointer_to

S32 = builtin_type("int")
#: struct percpu_counter { raw_spinlock_t lock; s64 count; s32 __percpu *counters; }
COUNTER = Type("struct", "percpu_counter", 24, members=[
    Member("count", builtin_type("long long"), 64), Member("counters", pointer_to(S32), 128)])


def _kernel(count: int, deltas: list[int]) -> tuple[FakeKernel, int]:
    """A counter at BASE whose per-CPU s32 deltas sit at BASE + 0x100 + 0x40 * cpu."""
    k = FakeKernel(0x1000, {("struct", "percpu_counter"): COUNTER})
    k.per_cpu_offsets = tuple(0x40 * cpu for cpu in range(len(deltas)))
    k.put(k.BASE + 8, count, "<q")
    k.put(k.BASE + 16, k.BASE + 0x100)
    for cpu, d in enumerate(deltas):
        k.put(k.BASE + 0x100 + 0x40 * cpu, d, "<i")
    return k, k.BASE


def test_percpu_counter_sum_adds_every_cpu_delta():
    k, addr = _kernel(100, [5, -7, 3, 0])
    counter = Object(k, "struct percpu_counter", addr)
    assert percpu_counter_sum(counter.address_of_()) == 101       # a pointer
    assert percpu_counter_sum(counter) == 101                     # or the struct itself
    assert [per_cpu_ptr(counter.counters, c)[0].value_() for c in range(4)] == [5, -7, 3, 0]
    k, addr = _kernel(-4, [1])
    assert percpu_counter_sum(Object(k, "struct percpu_counter", addr)) == -3  # not clamped


def test_percpu_counter_sum_without_per_cpu_counters():
    k, addr = _kernel(42, [9, 9])
    k.put(addr + 16, 0)            # counters NULL (before percpu_counter_init())
    assert percpu_counter_sum(Object(k, "struct percpu_counter", addr)) == 42
