"""modules: loaded kernel modules, like crash ``mod`` and /proc/modules."""

from __future__ import annotations


from kql.helpers.module import (for_each_module, module_base, module_name, module_refcount,
                                module_size, module_state, module_taint)
from kql.tables.base import (ADDRESS, Column, INT64, STRING, ScanContext, TableSpec)

__all__ = ["TABLES"]


def _rows(ctx: ScanContext):
    if ctx.kernel.symbols.get("modules") is None:
        return iter(())          # a kernel without CONFIG_MODULES
    return for_each_module(ctx.kernel)


def find_module(ctx: ScanContext, values: list):
    """``name = '...'``: walk the (short) module list for those names."""
    wanted = {v for v in values if isinstance(v, str)}
    if not wanted:
        return
    for mod in for_each_module(ctx.kernel):
        if module_name(mod) in wanted:
            yield mod


TABLES = (
    TableSpec(
        name="modules",
        doc="Loaded kernel modules (crash `mod`, /proc/modules), newest first.",
        object_column="module",
        walk="walk the modules list (struct module.list)",
        rows=_rows,
        lookups={"name": find_module},
        examples=("SELECT name, base, size, refcount FROM modules ORDER BY size DESC",),
        columns=(
            Column("module", ADDRESS, "the module (struct module *)",
                   lambda m: m.value_(), object_type="struct module *"),
            Column("name", STRING, "module name (mod->name)", module_name),
            Column("base", ADDRESS, "start of the core text (mem[MOD_TEXT].base; "
                   "core_layout.base before 6.4), as /proc/modules shows it", module_base),
            Column("size", INT64, "size in bytes of all its memory, init "
                   "included (as /proc/modules)", module_size),
            Column("refcount", INT64, "users of the module (module_refcount(); "
                   "NULL without CONFIG_MODULE_UNLOAD)", module_refcount),
            Column("state", STRING, "'live', 'coming', 'going' or 'unformed'",
                   module_state),
            Column("taint", STRING, "taint letters as /proc/modules shows them "
                   "(e.g. 'OE'); '' if untainted", module_taint),
            Column("taint_mask", INT64, "mod->taints (TAINT_* bits)",
                   lambda m: m.taints.value_()),
        ),
    ),
)
