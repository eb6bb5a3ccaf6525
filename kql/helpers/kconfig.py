"""The kernel's build configuration from memory (CONFIG_IKCONFIG; crash
``sys config``).

kernel/configs.c places the gzipped ``.config`` between the symbols
``kernel_config_data`` and ``kernel_config_data_end``, framed by the ASCII
markers ``IKCFG_ST`` and ``IKCFG_ED``.  Kernels built without
CONFIG_IKCONFIG (Debian's) have neither symbol; with CONFIG_IKCONFIG=m the
data is in the ``configs`` module, which kql does not read.
"""

from __future__ import annotations

import gzip
import re
import zlib

__all__ = ["NoKernelConfig", "kernel_config_text", "decode_ikconfig", "parse_config"]

MAGIC_START = b"IKCFG_ST"
MAGIC_END = b"IKCFG_ED"
MAX_SIZE = 1 << 20          # configs.gz is ~30-60 KiB; bound a corrupt size


class NoKernelConfig(LookupError):
    """The kernel has no built-in configuration."""


def decode_ikconfig(blob: bytes) -> str:
    """The ``.config`` text of a ``kernel_config_data`` blob (gzip; the
    IKCFG_ST / IKCFG_ED markers around it are allowed and dropped).

    :raises ValueError: if the blob is not gzip data
    """
    if blob.startswith(MAGIC_START):
        blob = blob[len(MAGIC_START):]
    end = blob.rfind(MAGIC_END)
    if end >= 0:
        blob = blob[:end]
    try:
        return gzip.decompress(blob).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"kernel_config_data is not gzip data: {e}") from None


def kernel_config_text(kernel) -> str:
    """The kernel's ``.config`` as text (cached on the kernel).

    :raises NoKernelConfig: when the kernel has no ``kernel_config_data``
    """
    text = kernel.cache.get("kernel_config")
    if text is None:
        start = kernel.symbols.get("kernel_config_data")
        end = kernel.symbols.get("kernel_config_data_end")
        if start is None or end is None:
            raise NoKernelConfig("kernel_config_data does not exist in this kernel "
                                 "(it was built without CONFIG_IKCONFIG)")
        size = end.address - start.address
        if not 0 < size <= MAX_SIZE:
            raise ValueError(f"kernel_config_data has an impossible size {size}")
        text = kernel.cache["kernel_config"] = decode_ikconfig(kernel.read(start.address, size))
    return text


_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_config(text: str):
    """``(name, value)`` for each option of a ``.config``: the value as
    written (``y``, ``m``, a number, a quoted string unquoted), ``n`` for
    ``# CONFIG_X is not set``."""
    for line in text.splitlines():
        m = _SET.match(line)
        if m:
            v = m.group(2)
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            yield m.group(1), v
            continue
        m = _UNSET.match(line)
        if m:
            yield m.group(1), "n"
