"""The two disk caches of :class:`kql.dwarf.DwarfTypes`, by build-id in the
cache directory (temp file + rename; another process's entries are kept on
save):

- ``dwarf-<key>.pickle`` (:class:`RecordStore`): DIE records, member lists,
  name lookups (misses too) and the CU offsets.  A warm open reads only this.
- ``dwarf-<key>.search.pickle`` (:class:`SearchCache`): what name searches
  learned (per-CU type indexes, string offsets of names, abbreviation
  layouts), read only when a new name must be found.
"""

from __future__ import annotations

from pathlib import Path

from kql.atomic import atomic_pickle, load_pickle

#: Bump when the record layout or the search rules change: old caches are ignored.
CACHE_FORMAT = 4


class _PickleCache:
    """One cache file: the dicts named in ``MERGED`` keep what another process
    (kql export -j, a second query) added since we loaded; the ``PLAIN``
    values are ours (:meth:`_merge_plain` may take the disk's)."""

    MERGED: tuple[str, ...] = ()
    PLAIN: tuple[str, ...] = ()

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.header = header
        self.dirty = False

    def _read(self) -> dict | None:
        if self.path is None:
            return None
        data = load_pickle(self.path, self.header)
        if data is not None:
            for name in self.MERGED + self.PLAIN:
                setattr(self, name, data[name])
        return data

    def _merge_plain(self, disk: dict) -> None:
        pass

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        disk = load_pickle(self.path, self.header)
        if disk is not None:
            for name in self.MERGED:
                mine = getattr(self, name)
                for k, v in disk[name].items():
                    mine.setdefault(k, v)
            self._merge_plain(disk)
        data = dict(self.header, **{name: getattr(self, name) for name in self.MERGED + self.PLAIN})
        try:
            atomic_pickle(self.path, data)
        except OSError:
            return   # a cache we cannot write is only slower, never wrong
        self.dirty = False


class RecordStore(_PickleCache):
    """What goes to disk.  Kept apart from DwarfTypes so a finalizer can save
    it without holding the DwarfTypes alive."""

    MERGED = ("records", "members", "names")
    PLAIN = ("cu_offsets",)

    def __init__(self, path: Path | None, header: dict):
        super().__init__(path, header)
        self.records: dict[int, tuple] = {}
        self.members: dict[int, list] = {}
        self.names: dict[tuple[str, str], int | None] = {}
        self.cu_offsets: list[int] | None = None

    def load(self) -> bool:
        """Whether the file was there (and is now loaded)."""
        return self._read() is not None


class SearchCache(_PickleCache):
    """What name searches learn about the DWARF (per-CU type indexes, string
    offsets of names, abbreviation layouts).  Saved next to the records but in
    its own file, read only when a search is needed, so that a later query
    that meets a new type skips the slow parts (pyelftools parsing abbrev
    tables and CUs)."""

    MERGED = ("cu_index", "strp", "leads")
    PLAIN = ("learned_members", "prefix")

    def __init__(self, path: Path | None, header: dict):
        super().__init__(path, header)
        self.cu_index: dict[int, dict] = {}
        self.strp: dict[str, int] = {}
        self.leads: dict = {}
        self.learned_members = False
        self.prefix: int | None = None
        self.loaded = False

    def load(self) -> None:
        self.loaded = True
        self._read()

    def _merge_plain(self, disk: dict) -> None:
        self.learned_members = self.learned_members or disk["learned_members"]
        if self.prefix is None:
            self.prefix = disk["prefix"]


def save_all(store: RecordStore, search: SearchCache) -> None:
    store.save()
    search.save()

