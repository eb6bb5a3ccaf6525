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


class RecordStore:
    """What goes to disk.  Kept apart from DwarfTypes so a finalizer can save
    it without holding the DwarfTypes alive."""

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.header = header
        self.records: dict[int, tuple] = {}
        self.members: dict[int, list] = {}
        self.names: dict[tuple[str, str], int | None] = {}
        self.cu_offsets: list[int] | None = None
        self.dirty = False

    def load(self) -> bool:
        if self.path is None:
            return False
        data = load_pickle(self.path, self.header)
        if data is None:
            return False
        self.records = data["records"]
        self.members = data["members"]
        self.names = data["names"]
        self.cu_offsets = data["cu_offsets"]
        return True

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        # Another process (kql export -j, a second query) may have added
        # entries since we loaded: keep them.
        disk = load_pickle(self.path, self.header)
        if disk is not None:
            for name in ("records", "members", "names"):
                mine = getattr(self, name)
                for k, v in disk[name].items():
                    mine.setdefault(k, v)
        data = dict(self.header, records=self.records, members=self.members,
                    names=self.names, cu_offsets=self.cu_offsets)
        try:
            atomic_pickle(self.path, data)
        except OSError:
            return   # a cache we cannot write is only slower, never wrong
        self.dirty = False



class SearchCache:
    """What name searches learn about the DWARF (per-CU type indexes, string
    offsets of names, abbreviation layouts).  Saved next to the records but in
    its own file, read only when a search is needed, so that a later query
    that meets a new type skips the slow parts (pyelftools parsing abbrev
    tables and CUs)."""

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.header = header
        self.cu_index: dict[int, dict] = {}
        self.strp: dict[str, int] = {}
        self.leads: dict = {}
        self.learned_members = False
        self.prefix: int | None = None
        self.dirty = False
        self.loaded = False

    def load(self) -> None:
        self.loaded = True
        data = load_pickle(self.path, self.header) if self.path else None
        if data is not None:
            self.cu_index = data["cu_index"]
            self.strp = data["strp"]
            self.leads = data["leads"]
            self.learned_members = data["learned_members"]
            self.prefix = data["prefix"]

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        disk = load_pickle(self.path, self.header)
        if disk is not None:
            for name in ("cu_index", "strp", "leads"):
                mine = getattr(self, name)
                for k, v in disk[name].items():
                    mine.setdefault(k, v)
            self.learned_members = self.learned_members or disk["learned_members"]
            if self.prefix is None:
                self.prefix = disk["prefix"]
        data = dict(self.header, cu_index=self.cu_index, strp=self.strp, leads=self.leads,
                    learned_members=self.learned_members, prefix=self.prefix)
        try:
            atomic_pickle(self.path, data)
        except OSError:
            return
        self.dirty = False


def save_all(store: RecordStore, search: SearchCache) -> None:
    store.save()
    search.save()

