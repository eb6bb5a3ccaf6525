"""Architecture hook objects: the only place that decides which arch a dump is.

``get_arch(machine)`` takes the machine name as the dump states it (kdump
``utsname.machine``, or derived from the ELF ``e_machine``) and returns the
hook object (see ``kql/arch/x86_64.py`` for what it offers).
"""

from __future__ import annotations

from kql.errors import DumpError

#: The smallest page of any arch kql reads (4 KiB on x86_64, i386 and
#: Debian's arm64): what a layer that knows no arch (physical memory) reads in
#: pieces of so that a read stops at the first unreadable page.
MIN_PAGE_SIZE = 4096

# Names a dump may state: utsname.machine, pyelftools' e_machine name.
_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x86-64": "x86_64", "em_x86_64": "x86_64",
            "aarch64": "arm64", "arm64": "arm64", "em_aarch64": "arm64",
            "i386": "i386", "i686": "i386", "em_386": "i386"}


def get_arch(machine: str):
    """The hook object for ``machine`` (e.g. ``"x86_64"``); DumpError if unsupported."""
    key = _ALIASES.get((machine or "").strip().lower())
    if key == "x86_64":
        from kql.arch.x86_64 import ARCH
        return ARCH
    if key == "arm64":
        from kql.arch.arm64 import ARCH
        return ARCH
    if key == "i386":
        from kql.arch.i386 import ARCH
        return ARCH
    raise DumpError(f"unsupported architecture {machine!r}: kql reads x86_64, arm64 and "
                    f"i386 dumps only")


def detect_machine(stated: str | None, notes=(), vmcoreinfo: dict | None = None) -> str | None:
    """The machine a dump is for: the name it states, or (QEMU's kdump says "Unknown")
    what its notes and VMCOREINFO show.  None if nothing tells.
    """
    key = _ALIASES.get((stated or "").strip().lower())
    if key:
        return key
    vmcoreinfo = vmcoreinfo or {}
    # x86_64-only VMCOREINFO keys (arch/x86/kernel/machine_kexec_64.c).
    if "SYMBOL(init_top_pgt)" in vmcoreinfo or "NUMBER(pgtable_l5_enabled)" in vmcoreinfo:
        return "x86_64"
    # arm64-only (arch/arm64/kernel/crash_core.c)
    if "NUMBER(kimage_voffset)" in vmcoreinfo:
        return "arm64"
    if "CONFIG_X86_PAE" in vmcoreinfo:       # arch/x86/kernel/machine_kexec_32.c
        return "i386"
    from kql.arch.arm64 import PRSTATUS_SIZE as ARM64_PRSTATUS_SIZE
    from kql.arch.x86_64 import PRSTATUS_SIZE
    sizes = {PRSTATUS_SIZE: "x86_64", ARM64_PRSTATUS_SIZE: "arm64"}
    for note in notes:
        if note.name == "CORE" and note.type == 1 and len(note.desc) in sizes:
            return sizes[len(note.desc)]
    return None
