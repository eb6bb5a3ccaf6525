"""Loadable modules (include/linux/module.h, kernel/module/): the ``modules``
list, layout (base and size), reference count, taint letters and each
module's own symbol table (``mod->kallsyms``).
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import list_for_each_entry
from kql.object import Object
from kql.symbols import ELF_SYM, decode_elf_syms

__all__ = ["for_each_module", "find_module", "module_name", "module_state",
           "module_base", "module_size", "module_refcount", "module_taint",
           "module_symbols"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "modules":      "struct list_head",
    "btf_modules":  "struct list_head",
}


def for_each_module(kernel) -> Iterator[Object]:
    """Every loaded module, in ``modules`` list order (newest first).

    :return: iterator of ``struct module *``
    """
    head = kernel.var("modules").address_of_()
    yield from list_for_each_entry("struct module", head, "list")


def module_name(mod: Object) -> str:
    """:param mod: ``struct module *``"""
    return mod.name.string_().decode(errors="replace")


def find_module(kernel, name: str) -> Object | None:
    """The module called ``name``, or None.

    :return: ``struct module *``
    """
    for mod in for_each_module(kernel):
        if module_name(mod) == name:
            return mod
    return None


def module_state(mod: Object) -> str:
    """``'live'``, ``'coming'``, ``'going'`` or ``'unformed'`` (enum
    module_state, named from the kernel's own enumerators).

    :param mod: ``struct module *``
    """
    st = mod.state
    name = st.enum_name_() if st.type_.strip_typedefs().kind == "enum" else None
    if name is None:
        return str(st.value_())
    return name.removeprefix("MODULE_STATE_").lower()


def _mem_types(kernel) -> tuple[int, ...] | None:
    """Indexes of mod->mem[] (6.4+), or None for the older layouts."""
    cache = kernel.cache
    if "module_mem_types" not in cache:
        t = kernel.types.find_type("struct module")
        cache["module_mem_types"] = None
        # Since Linux 6.4 (commit ac3b43283923 "module: replace module_layout
        # with module_memory") the sizes are in mod->mem[]; before, layouts.
        if t.has_member("mem"):
            n = t.member("mem")[0].type.strip_typedefs().length or 0
            cache["module_mem_types"] = tuple(range(n))
    return cache["module_mem_types"]


def _mod_mem_type(kernel, name: str, default: int) -> int:
    btf = kernel.btf
    hit = btf.find_enumerator(name) if btf is not None else None
    return hit[1] if hit is not None else default


def module_base(mod: Object) -> int:
    """Start of the module's core text.

    :param mod: ``struct module *``
    """
    # Since Linux kernel commit ac3b43283923 ("module: replace module_layout
    # with module_memory") (in v6.4), the memory regions are mod->mem[type];
    # before, mod->core_layout (and init_layout, data_layout).
    if _mem_types(mod.prog_) is not None:
        return mod.mem[_mod_mem_type(mod.prog_, "MOD_TEXT", 0)].base.value_()
    return mod.core_layout.base.value_()


def module_size(mod: Object) -> int:
    """Total size as /proc/modules shows it (all regions, init included:
    ``module_total_size()`` / ``init_layout.size + core_layout.size``).

    :param mod: ``struct module *``
    """
    types = _mem_types(mod.prog_)
    if types is not None:
        return sum(mod.mem[i].size.value_() for i in types)
    size = mod.core_layout.size.value_() + mod.init_layout.size.value_()
    # CONFIG_ARCH_WANTS_MODULES_DATA_IN_VMALLOC (6.2, 6.3) adds data_layout.
    if mod.has_member_("data_layout"):
        size += mod.data_layout.size.value_()
    return size


def module_refcount(mod: Object) -> int | None:
    """``module_refcount()``: users of the module (refcnt - MODULE_REF_BASE);
    None without CONFIG_MODULE_UNLOAD.

    :param mod: ``struct module *``
    """
    if not mod.has_member_("refcnt"):
        return None
    return mod.refcnt.counter.value_() - 1


def _taint_flags(kernel) -> list[tuple[str, bool]]:
    """(letter, applies to modules) for each taint bit, from the kernel's
    own ``taint_flags[]``."""
    flags = kernel.cache.get("taint_flags")
    if flags is None:
        flags = []
        sym = kernel.symbols.get("taint_flags")
        if sym is not None:
            t = kernel.types.find_type("struct taint_flag")
            size = t.size
            co, mo = t.offsetof("c_true"), t.offsetof("module")
            # The array has TAINT_FLAGS_COUNT entries; stop at the first that
            # is not a letter (the symbol's size may include padding).
            for i in range(64):
                try:
                    raw = kernel.read(sym.address + i * size, size)
                except FaultError:
                    break
                c = raw[co:co + 1]
                if not c.isalpha():
                    break
                flags.append((c.decode(), bool(raw[mo])))
        kernel.cache["taint_flags"] = flags
    return flags


def module_taint(mod: Object) -> str:
    """Taint letters as /proc/modules shows them between parentheses (e.g.
    ``"OE"``; ``""`` for an untainted module).

    :param mod: ``struct module *``
    """
    taints = mod.taints.value_()
    out = []
    for bit, (letter, for_module) in enumerate(_taint_flags(mod.prog_)):
        if for_module and taints >> bit & 1:
            out.append(letter)
    return "".join(out)


def module_symbols(mod: Object) -> Iterator[tuple[str, int, int, str]]:
    """The module's own symbols (``mod->kallsyms``, what /proc/kallsyms lists
    for it): ``(name, address, size, nm letter)``.

    :param mod: ``struct module *``
    """
    kernel = mod.prog_
    ks = mod.kallsyms
    if not ks.value_():
        return
    ks = ks.read_()
    n = ks.num_symtab.value_()
    if n <= 0 or n > 1 << 20:
        return
    symtab = ks.symtab.value_()
    strtab = ks.strtab.value_()
    elfclass = kernel.arch.pointer_size * 8
    raw = kernel.read(symtab, n * ELF_SYM[elfclass].size)
    # Kernels with mod_kallsyms.typetab keep the nm letters there (filled in
    # by add_kallsyms()); without it there is no letter to report.
    typetab = ks.typetab.value_() if ks.has_member_("typetab") else 0
    types = kernel.read(typetab, n) if typetab else None
    for i, (st_name, _info, _other, _shndx, value, size) in enumerate(
            decode_elf_syms(raw, elfclass)):
        if i == 0 or not st_name:
            continue
        name = kernel.read_cstring(strtab + st_name, 512).decode(errors="replace")
        letter = chr(types[i]) if types is not None else "?"
        if not name or letter == "U":
            continue
        yield name, value, size, letter
