"""Frame-pointer unwinder of 32-bit x86 kernels (arch/x86/kernel/unwind_frame.c).

Debian's 686-pae kernels are built with CONFIG_UNWINDER_FRAME_POINTER: every
function starts ``push %ebp; mov %esp, %ebp``, so at ``bp`` sit the caller's
``bp`` and, one word up, the return address.  The entry code marks a
``pt_regs`` on the stack by storing its address with bit 31 cleared in
``%ebp`` (entry_32.S ENCODE_FRAME_POINTER: ``andl $0x7fffffff, %ebp``);
``unwind_frame.c`` ``decode_frame_pointer()`` sets it again.  The entry
code's frame that holds a user-mode ``pt_regs`` (found so, or right below the
top of the stack after sysenter) ends the walk as a "regs" frame.  A
kernel-mode ``pt_regs`` of 32-bit x86 ends before ``sp``/``ss``: the interrupted stack
pointer is just past the ``cs``/``flags`` words (``kernel_stack_pointer()``).
"""

from __future__ import annotations

import struct

from kql.arch.orc import MAX_FRAMES, UnwindFrame
from kql.errors import FaultError

_TOP_BIT = 0x80000000


class FramePointerUnwinder:
    """Same interface as :class:`kql.arch.orc.OrcUnwinder` for the stack helpers."""

    def __init__(self, kernel):
        self.kernel = kernel
        arch = kernel.arch
        self.regs_names = arch.prstatus_regs
        self.regs_struct = struct.Struct(f"<{len(self.regs_names)}I")

    def _pt_regs(self, addr: int, hi: int) -> dict | None:
        size = self.regs_struct.size
        # a kernel-mode pt_regs stops before sp/ss; read what the stack holds
        avail = min(size, hi - addr) if hi else size
        if avail < size - 8:
            return None
        raw = self.kernel.read(addr, avail) + bytes(size - avail)
        regs = dict(zip(self.regs_names, self.regs_struct.unpack(raw)))
        if not regs["cs"] & 3:
            regs["esp"] = addr + size - 8       # kernel_stack_pointer(): &regs->sp
        return regs

    def unwind(self, ip: int, sp: int, bp: int, *, regs: dict | None = None,
               exact: bool = False, stack_bounds: tuple[int, int] | None = None,
               max_frames: int = MAX_FRAMES) -> tuple[list[UnwindFrame], str]:
        read = self.kernel.read_u32
        lo, hi = stack_bounds if stack_bounds else (0, 0)

        def on_stack(addr: int, size: int = 8) -> bool:
            return not hi or lo <= addr and addr + size <= hi

        def at_top(addr: int) -> bool:
            """``addr`` is the pt_regs at the top of the stack (task_pt_regs())."""
            return bool(hi) and addr + self.regs_struct.size >= hi - 16

        frames = [UnwindFrame(ip, sp, "call", exact, regs if exact else None)]
        stop = "frame limit"
        for _ in range(max_frames):
            if not bp:
                stop = "end"
                break
            if not bp & _TOP_BIT:                   # an encoded pt_regs pointer
                addr = bp | _TOP_BIT
                if not on_stack(addr, 8):
                    stop = f"frame pointer {bp:#x} is off the stack"
                    break
                top = at_top(addr)
                try:
                    r = self._pt_regs(addr, hi)
                except FaultError as e:
                    stop = "end" if top else f"pt_regs unreadable: {e}"
                    break
                if r is not None and r["cs"] & 3:
                    # the entry code's frame holds the user-mode pt_regs (as
                    # ORC's last frame on x86_64: kind "regs", walk stops)
                    frames[-1] = frames[-1]._replace(kind="regs", regs=r)
                    stop = "user"
                    break
                if r is None or top:
                    stop = "end"        # a kthread's pt_regs at the top of its stack
                    break
                frames.append(UnwindFrame(r["eip"], r["esp"], "regs", True, r))
                bp = r["ebp"]
                continue
            if not on_stack(bp) or bp < sp:
                stop = "end" if hi and bp >= hi - 8 else f"frame pointer {bp:#x} is off the stack"
                break
            try:
                next_bp, ret = read(bp), read(bp + 4)
            except FaultError as e:
                stop = f"stack unreadable: {e}"
                break
            if not ret:
                stop = "end"
                break
            sp = bp + 8
            frames.append(UnwindFrame(ret, sp, "call", False, None))
            if hi and hi - (sp + self.regs_struct.size) in (8, 16):
                # the entry code called the C handler right below the task's
                # pt_regs (TOP_OF_KERNEL_STACK_PADDING: 8, 16 with CONFIG_VM86):
                # unwind_frame.c is_last_task_frame() (sysenter keeps the
                # user's %ebp instead of an encoded pointer)
                r = self._pt_regs(sp, hi)
                if r is not None and r["cs"] & 3 == 3 and r["ss"] & 3 == 3:
                    frames[-1] = frames[-1]._replace(kind="regs", regs=r)
                    stop = "user"
                    break
            if next_bp and next_bp & _TOP_BIT and next_bp <= bp:
                stop = "frame pointers do not grow"
                break
            bp = next_bp
        return frames, stop
