"""config: the kernel's build configuration (crash ``sys config``)."""

from __future__ import annotations

from kql.errors import PlanError
from kql.helpers.kconfig import NoKernelConfig, kernel_config_text, parse_config
from kql.tables.base import Column, NotInThisKernel, STRING, TableSpec

__all__ = ["TABLES"]


def _rows(ctx):
    try:
        text = kernel_config_text(ctx.kernel)
    except NoKernelConfig as e:
        raise NotInThisKernel(f"config: {e}") from None
    except ValueError as e:
        raise PlanError(f"config: {e}") from None
    yield from parse_config(text)


TABLES = (
    TableSpec(
        name="config",
        doc="The kernel's build configuration, one row per option, decoded from "
            "kernel_config_data (CONFIG_IKCONFIG=y; crash `sys config`). Kernels "
            "built without it (Debian's) give an error saying so.",
        walk="gunzip kernel_config_data",
        rows=_rows,
        examples=("SELECT value FROM config WHERE name = 'CONFIG_HZ'",),
        columns=(
            Column("name", STRING, "the option (CONFIG_…)", lambda r: r[0]),
            Column("value", STRING, "its value as written: y, m, a number, a string "
                   "(unquoted); n for '# CONFIG_… is not set'", lambda r: r[1]),
        ),
    ),
)
