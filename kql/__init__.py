"""kql: declarative SQL queries over Linux kernel memory dumps."""

__version__ = "0.1.0"
