"""dmesg: the kernel log (crash ``log``, /dev/kmsg)."""

from __future__ import annotations


from kql.errors import DumpError
from kql.helpers.printk import LOG_CONT, get_printk_records
from kql.tables.base import (BOOL, Column, INT32, INT64, STRING, ScanContext, TableSpec)

__all__ = ["TABLES"]


def _rows(ctx: ScanContext):
    try:
        return iter(get_printk_records(ctx.kernel))
    except LookupError as e:
        raise DumpError(f"cannot read the kernel log: {e}") from None


TABLES = (
    TableSpec(
        name="dmesg",
        doc="The kernel log: one row per printk record of the ring buffer, oldest "
            "first, as /dev/kmsg reads them (crash `log`).",
        walk="printk ring buffer (prb): descriptor ring from tail_id to head_id",
        rows=_rows,
        examples=("SELECT ts_ns / 1e9 AS t, text FROM dmesg WHERE level <= 3",),
        columns=(
            Column("seq", INT64, "record sequence number", lambda r: r.seq),
            Column("ts_ns", INT64, "timestamp, ns since boot (local_clock)",
                   lambda r: r.ts_nsec),
            Column("level", INT32, "log level (0 emerg ... 7 debug)",
                   lambda r: r.level),
            Column("facility", INT32, "syslog facility (0 kernel, 1 user ...)",
                   lambda r: r.facility),
            Column("caller", STRING, "who printed it: 'T<tid>' (a task) or "
                   "'C<cpu>' (interrupt context)", lambda r: r.caller),
            Column("text", STRING, "message text, without the trailing newline "
                   "(a record may hold several lines); NULL if unreadable",
                   lambda r: r.text),
            Column("cont", BOOL, "a continuation (LOG_CONT) that could not be "
                   "merged into the previous record", lambda r: bool(r.flags & LOG_CONT)),
            Column("subsystem", STRING, "device subsystem (dev_printk: "
                   "SUBSYSTEM=), NULL if none", lambda r: r.subsystem or None),
            Column("device", STRING, "device (dev_printk: DEVICE=), NULL if none",
                   lambda r: r.device or None),
        ),
    ),
)
