"""Raw memory helpers for the generic table functions."""

from __future__ import annotations

import re
from typing import Iterator

from kql.errors import FaultError, PlanError


def resolve_address(kernel, where) -> int:
    """An address given as an int, a symbol name, or ``symbol.member.path``
    (e.g. ``'init_task.tasks'``: the address of that member of the variable).

    :param where: int | str
    :return: the address
    """
    if isinstance(where, int):
        return where
    if not isinstance(where, str):
        raise PlanError(f"expected an address or a symbol name, got {where!r}")
    text = where.strip()
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
        return int(text, 0)
    name, _, path = text.partition(".")
    try:
        sym = kernel.symbol(name)
    except LookupError:
        raise PlanError(f"no symbol named '{name}'") from None
    if not path:
        return sym.address
    try:
        t = kernel.var_type(name)
        return sym.address + t.offsetof(path)
    except LookupError as e:
        raise PlanError(f"'{text}': {e}") from None


def read_words(kernel, address: int, count: int, width: int = 8
               ) -> Iterator[tuple[int, int | None]]:
    """``count`` little-endian words of ``width`` bytes from ``address``;
    an unreadable word is None (the walk goes on past it)."""
    for i in range(count):
        a = address + i * width
        try:
            yield a, int.from_bytes(kernel.read(a, width), "little")
        except FaultError:
            yield a, None
