"""Files, paths and mounts (fs/d_path.c, fs/namespace.c, fs/proc_namespace.c,
fs/file.c, include/linux/fs.h, include/linux/mount.h).

``d_path()`` rebuilds a path the way /proc/PID/fd links show it: pseudo
files through their dentry's ``d_dname`` (``socket:[ino]``, ``pipe:[ino]``,
``anon_inode:[eventpoll]`` ...), others by walking ``d_parent`` up to each
mount's root and then across ``mnt_parent``/``mnt_mountpoint`` to the root
of pid 1 (the reader's root in /proc), with `` (deleted)`` for unlinked
files.  ``mount_options()`` prints a mount's options as /proc/mounts does,
the per-filesystem part (``show_options``) for the filesystems kql knows.

Every walk is bounded and cycle-safe; problems end the walk with a warning
on the kernel (``kernel.warn``).
"""

from __future__ import annotations

import stat
from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, list_for_each_entry, walk_warn
from kql.helpers.rbtree import rbtree_inorder_for_each_entry
from kql.object import Object
from kql.types import pointer_to

__all__ = [
    "d_path", "d_path_root", "dentry_path", "d_unlinked", "d_name", "real_mount",
    "fs_root", "task_mnt_ns", "for_each_mount", "mount_devname", "mount_path",
    "mount_fstype", "mount_options", "mount_readonly", "mnt_is_idmapped",
    "for_each_file", "fdtable_max_fds", "inode_type", "file_inode", "S_IFMT_NAMES",
    "MNT_FLAGS", "SB_FLAGS",
]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "super_blocks":      "struct list_head",
    "init_files":        "struct files_struct",
    "init_fs":           "struct fs_struct",
    "mount_hashtable":   "struct hlist_head *",
    "inode_hashtable":   "struct hlist_head *",
    "dentry_hashtable":  "struct hlist_head *",
}

#: ``i_mode & S_IFMT`` -> the open_files type (0: an anonymous inode, whose
#: i_mode has no file-type bits: fs/libfs.c alloc_anon_inode()).
S_IFMT_NAMES = {
    stat.S_IFREG: "REG", stat.S_IFDIR: "DIR", stat.S_IFCHR: "CHR", stat.S_IFBLK: "BLK",
    stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "SOCK", stat.S_IFLNK: "LNK", 0: "ANON",
}

# include/linux/mount.h MNT_* and include/linux/fs.h SB_* are #defines (not in
# BTF); these values are unchanged from Linux 5.10 (MNT_NOSYMFOLLOW) to 6.12.
MNT_FLAGS = {"NOSUID": 0x01, "NODEV": 0x02, "NOEXEC": 0x04, "NOATIME": 0x08,
             "NODIRATIME": 0x10, "RELATIME": 0x20, "READONLY": 0x40, "NOSYMFOLLOW": 0x80,
             "CURSOR": 0x10000000}
SB_FLAGS = {"RDONLY": 1, "SYNCHRONOUS": 16, "MANDLOCK": 64, "DIRSYNC": 128,
            "LAZYTIME": 1 << 25}

# fs/proc_namespace.c show_sb_opts() / show_mnt_opts(), in print order.
_SB_OPTS = (("SYNCHRONOUS", ",sync"), ("DIRSYNC", ",dirsync"), ("MANDLOCK", ",mand"),
            ("LAZYTIME", ",lazytime"))
_MNT_OPTS = (("NOSUID", ",nosuid"), ("NODEV", ",nodev"), ("NOEXEC", ",noexec"),
             ("NOATIME", ",noatime"), ("NODIRATIME", ",nodiratime"),
             ("RELATIME", ",relatime"), ("NOSYMFOLLOW", ",nosymfollow"))

_MAX_DEPTH = 4096          # path components / mounts crossed by one d_path


# -- layout -----------------------------------------------------------------------------

def _layout(kernel) -> dict:
    lay = kernel.cache.get("fs_layout")
    if lay is None:
        T = kernel.types.find_type
        dentry = T("struct dentry")
        mount = T("struct mount")
        vfsmount = T("struct vfsmount")
        qstr = T("struct qstr")
        mnt_off = mount.offsetof("mnt")
        lay = {
            "d_parent": dentry.offsetof("d_parent"),
            "d_name": dentry.offsetof("d_name"),
            "qstr_len": qstr.offsetof("len"),
            "qstr_name": qstr.offsetof("name"),
            "d_op": dentry.offsetof("d_op"),
            "d_inode": dentry.offsetof("d_inode"),
            # d_hash is a struct hlist_bl_node { next, pprev }
            "d_hash_pprev": dentry.offsetof("d_hash") + 8,
            "d_fsdata": dentry.offsetof("d_fsdata"),
            "d_dname": T("struct dentry_operations").offsetof("d_dname"),
            "i_ino": T("struct inode").offsetof("i_ino"),
            "mnt": mnt_off,
            "mnt_root": mnt_off + vfsmount.offsetof("mnt_root"),
            "mnt_parent": mount.offsetof("mnt_parent"),
            "mnt_mountpoint": mount.offsetof("mnt_mountpoint"),
            "mnt_ns": mount.offsetof("mnt_ns"),
            "dentry_ptr": pointer_to(dentry),
            "mount_ptr": pointer_to(mount),
        }
        kernel.cache["fs_layout"] = lay
    return lay


def _sym_name(kernel, addr: int) -> str | None:
    """Name of the function at ``addr`` (exactly its start), else None."""
    if not addr:
        return None
    hit = kernel.symbolize(addr)
    if hit is None or hit[1] != 0:
        return None
    return hit[0].name


# -- dentries and mounts -----------------------------------------------------------------

def d_name(dentry: Object) -> bytes:
    """The dentry's name (``dentry->d_name``).

    :param dentry: ``struct dentry *``
    """
    return _d_name(dentry.prog_, dentry.value_(), _layout(dentry.prog_))


def _d_name(kernel, dentry: int, lay: dict) -> bytes:
    q = dentry + lay["d_name"]
    length = kernel.read_u32(q + lay["qstr_len"])
    name = kernel.read_pointer(q + lay["qstr_name"])
    if length > 255:
        raise ValueError(f"dentry {dentry:#x}: name length {length} > NAME_MAX")
    return kernel.read(name, length) if length else b""


def real_mount(vfsmnt: Object) -> Object:
    """``real_mount()``: the ``struct mount`` around a ``struct vfsmount``.

    :param vfsmnt: ``struct vfsmount *``
    :return: ``struct mount *``
    """
    kernel = vfsmnt.prog_
    lay = _layout(kernel)
    return _ptr(kernel, lay["mount_ptr"], vfsmnt.value_() - lay["mnt"])


def d_unlinked(dentry: Object) -> bool:
    """``d_unlinked()``: unhashed and not a root.

    :param dentry: ``struct dentry *``
    """
    kernel = dentry.prog_
    lay = _layout(kernel)
    return _d_unlinked(kernel, dentry.value_(), lay)


def _d_unlinked(kernel, dentry: int, lay: dict) -> bool:
    unhashed = kernel.read_pointer(dentry + lay["d_hash_pprev"]) == 0
    return unhashed and kernel.read_pointer(dentry + lay["d_parent"]) != dentry


def _prepend_path(kernel, dentry: int, mnt: int, root: tuple[int, int] | None
                  ) -> tuple[bytes, int]:
    """fs/d_path.c ``prepend_path()``: ``(path, error)`` of ``dentry`` on
    ``struct mount`` ``mnt``; error 0 when ``root`` (vfsmount, dentry) was
    reached, 1 at the namespace's root, 2 detached mount, 3 escaped."""
    lay = _layout(kernel)
    read_pointer = kernel.read_pointer
    mnt_off = lay["mnt"]
    parts: list[bytes] = []
    error = 0
    seen: set[tuple[int, int]] = set()
    while root is None or dentry != root[1] or mnt + mnt_off != root[0]:
        if (dentry, mnt) in seen or len(seen) > _MAX_DEPTH:
            walk_warn(kernel, f"d_path: cycle or runaway path at dentry {dentry:#x}")
            raise ValueError(f"d_path: cyclic dentry/mount chain at dentry {dentry:#x}")
        seen.add((dentry, mnt))
        parent = read_pointer(dentry + lay["d_parent"])
        if dentry == read_pointer(mnt + lay["mnt_root"]):
            m = read_pointer(mnt + lay["mnt_parent"])
            if mnt != m:
                dentry = read_pointer(mnt + lay["mnt_mountpoint"])
                mnt = m
                continue
            ns = read_pointer(mnt + lay["mnt_ns"])
            # is_anon_ns(): the namespace has seq 0 (a detached tree)
            error = 1 if ns and ns < (1 << 64) - 4095 and not _is_anon_ns(kernel, ns) else 2
            break
        if dentry == parent:
            error = 3
            break
        parts.append(_d_name(kernel, dentry, lay))
        dentry = parent
    if not parts:
        return b"/", error
    return b"".join(b"/" + p for p in reversed(parts)), error


def _is_anon_ns(kernel, ns: int) -> bool:
    off = kernel.cache.get("mnt_ns_seq_off")
    if off is None:
        off = kernel.cache["mnt_ns_seq_off"] = kernel.types.find_type(
            "struct mnt_namespace").offsetof("seq")
    return kernel.read_u64(ns + off) == 0


def fs_root(kernel) -> tuple[int, int] | None:
    """``(struct vfsmount *, struct dentry *)`` of pid 1's root (``fs->root``),
    the root /proc paths are relative to (cached per dump); None if pid 1 is
    gone (paths then run to the namespace's root)."""
    if "fs_root" not in kernel.cache:
        root = None
        try:
            from kql.helpers.pid import find_task
            task = find_task(kernel, 1)
            if task.value_() and task.fs.value_():
                r = task.fs.root
                root = (r.mnt.value_(), r.dentry.value_())
        except FaultError as e:
            walk_warn(kernel, f"fs_root: pid 1's root unreadable: {e}")
        kernel.cache["fs_root"] = root
    return kernel.cache["fs_root"]


def d_path_root(path: Object, root: tuple[int, int] | None = None) -> bytes | None:
    """``__d_path()``: the path of ``path`` relative to ``root`` (default
    :func:`fs_root`), without ``d_dname`` or `` (deleted)``; None when the
    path is not under ``root`` (/proc/mounts then skips the mount).

    :param path: ``struct path *`` (or a ``struct path`` reference)
    """
    kernel = path.prog_
    root = fs_root(kernel) if root is None else root
    mnt = path.mnt.value_()
    dentry = path.dentry.value_()
    s, error = _prepend_path(kernel, dentry, mnt - _layout(kernel)["mnt"], root)
    return None if error and root is not None else s


def dentry_path(dentry: Object, vfsmnt: Object) -> bytes:
    """The path of ``dentry`` on mount ``vfsmnt`` up to pid 1's root.

    :param dentry: ``struct dentry *``
    :param vfsmnt: ``struct vfsmount *``
    """
    kernel = dentry.prog_
    return _d_path(kernel, vfsmnt.value_(), dentry.value_())


# d_op->d_dname functions: name -> formatter(kernel, dentry address, layout)
def _ino(kernel, dentry: int, lay: dict) -> int:
    return kernel.read_ulong(kernel.read_pointer(dentry + lay["d_inode"]) + lay["i_ino"])


def _ns_dname(kernel, dentry: int, lay: dict) -> bytes:
    # fs/nsfs.c: d_fsdata is the namespace's struct proc_ns_operations
    ops = kernel.read_pointer(dentry + lay["d_fsdata"])
    off = kernel.types.find_type("struct proc_ns_operations").offsetof("name")
    name = kernel.read_cstring(kernel.read_pointer(ops + off), 64)
    return b"%s:[%d]" % (name, _ino(kernel, dentry, lay))


_D_DNAME = {
    "sockfs_dname": lambda p, d, l: b"socket:[%d]" % _ino(p, d, l),          # net/socket.c
    "pipefs_dname": lambda p, d, l: b"pipe:[%d]" % _ino(p, d, l),            # fs/pipe.c
    "anon_inodefs_dname": lambda p, d, l: b"anon_inode:" + _d_name(p, d, l),  # fs/anon_inodes.c
    "pidfs_dname": lambda p, d, l: b"anon_inode:[pidfd]",                    # fs/pidfs.c (6.9+)
    "ns_dname": _ns_dname,                                                    # fs/nsfs.c
    # fs/d_path.c simple_dname(): files of internal mounts (memfd, SysV shm)
    "simple_dname": lambda p, d, l: b"/" + _d_name(p, d, l) + b" (deleted)",
    "dmabuffs_dname": None,        # needs the dma_buf name under its lock: unsupported
}


def _d_path(kernel, vfsmnt: int, dentry: int) -> bytes:
    lay = _layout(kernel)
    read_pointer = kernel.read_pointer
    mount = vfsmnt - lay["mnt"]
    d_op = read_pointer(dentry + lay["d_op"])
    if d_op:
        fn = read_pointer(d_op + lay["d_dname"])
        if fn and (read_pointer(dentry + lay["d_parent"]) != dentry
                   or dentry != read_pointer(mount + lay["mnt_root"])):
            name = _sym_name(kernel, fn)
            fmt = _D_DNAME.get(name)
            if fmt is None:
                raise ValueError(f"d_path: dentry {dentry:#x} is named by {name or hex(fn)}(), "
                                 f"which kql does not know")
            return fmt(kernel, dentry, lay)
    s, _ = _prepend_path(kernel, dentry, mount, fs_root(kernel))
    if _d_unlinked(kernel, dentry, lay):
        s += b" (deleted)"
    return s


def d_path(path: Object) -> bytes:
    """``d_path()`` as /proc/PID/fd links show it (relative to pid 1's root).

    :param path: ``struct path *`` (or a ``struct path`` reference, e.g. ``file->f_path``)
    :return: the path as bytes
    """
    return _d_path(path.prog_, path.mnt.value_(), path.dentry.value_())


# -- mount namespaces ------------------------------------------------------------------

def task_mnt_ns(task: Object) -> Object:
    """``task->nsproxy->mnt_ns``.

    :param task: ``struct task_struct *``
    :return: ``struct mnt_namespace *``
    """
    return task.nsproxy.mnt_ns


def _default_ns(kernel) -> Object:
    from kql.helpers.pid import find_task
    try:
        task = find_task(kernel, 1)
        if task.value_() and task.nsproxy.value_():
            return task_mnt_ns(task)
    except FaultError as e:
        walk_warn(kernel, f"for_each_mount: pid 1 unreadable, using init_task: {e}")
    return task_mnt_ns(kernel.var("init_task").address_of_())


def for_each_mount(kernel, ns: Object | None = None) -> Iterator[Object]:
    """Every mount of a mount namespace, in /proc/mounts order.

    :param ns: ``struct mnt_namespace *`` (default: pid 1's)
    :return: iterator of ``struct mount *``
    """
    if ns is None:
        ns = _default_ns(kernel)
    mount_t = kernel.types.find_type("struct mount")
    ns_t = kernel.types.find_type("struct mnt_namespace")
    # Since Linux kernel commit 2eea9ce4310d ("mounts: keep list of mounts in an
    # rbtree") (in v6.8), the mounts of a namespace are in a red-black tree
    # (ns->mounts, mount.mnt_node) sorted by mnt_id_unique; before, a list
    # (ns->list, mount.mnt_list) that /proc/mounts cursors also sit on.
    if ns_t.has_member("list"):
        it = list_for_each_entry(mount_t, ns.list.address_of_(), "mnt_list")
    else:
        it = rbtree_inorder_for_each_entry(mount_t, ns.mounts.address_of_(), "mnt_node")
    vfsmount = kernel.types.find_type("struct vfsmount")
    flags_off = mount_t.offsetof("mnt") + vfsmount.offsetof("mnt_flags")
    sb_off = mount_t.offsetof("mnt") + vfsmount.offsetof("mnt_sb")
    for m in it:
        try:
            # skip the cursors of open /proc/mounts files (5.8 to 6.7): they
            # have MNT_CURSOR and no superblock
            if (kernel.read_u32(m.value_() + flags_off) & MNT_FLAGS["CURSOR"]
                    or not kernel.read_pointer(m.value_() + sb_off)):
                continue
        except FaultError as e:
            walk_warn(kernel, f"for_each_mount: mount {m.value_():#x} unreadable: {e}")
            continue
        yield m


def _seq_escape(s: bytes, esc: bytes = b" \t\n\\") -> str:
    """seq_escape()/mangle(): characters of ``esc`` as ``\\ooo``."""
    out = []
    for c in s:
        out.append("\\%03o" % c if c in esc else chr(c))
    return "".join(out)


def mount_devname(mnt: Object) -> str:
    """The device column of /proc/mounts (``mnt_devname``, "none" if NULL;
    escaped like the kernel's mangle()).

    :param mnt: ``struct mount *``
    """
    p = mnt.mnt_devname.value_()
    return _seq_escape(mnt.prog_.read_cstring(p, 4096) if p else b"none")


def mount_path(mnt: Object) -> str | None:
    """The mount point as /proc/mounts prints it (relative to pid 1's root,
    escaped); None if it lies outside that root.

    :param mnt: ``struct mount *``
    """
    kernel = mnt.prog_
    lay = _layout(kernel)
    addr = mnt.value_()
    root = kernel.read_pointer(addr + lay["mnt_root"])
    s, error = _prepend_path(kernel, root, addr, fs_root(kernel))
    if error and fs_root(kernel) is not None:
        return None
    return _seq_escape(s)


def mount_fstype(mnt: Object) -> str:
    """``sb->s_type->name`` (plus ``.subtype``), as /proc/mounts prints it.

    :param mnt: ``struct mount *``
    """
    kernel = mnt.prog_
    sb = mnt.mnt.mnt_sb
    s = _seq_escape(sb.s_type.name.string_())
    sub = sb.s_subtype.value_()
    if sub:
        s += "." + _seq_escape(kernel.read_cstring(sub, 256))
    return s


def mount_readonly(mnt: Object) -> bool:
    """``__mnt_is_readonly()``: MNT_READONLY or a read-only superblock.

    :param mnt: ``struct mount *``
    """
    v = mnt.mnt
    return bool(v.mnt_flags.value_() & MNT_FLAGS["READONLY"]
                or v.mnt_sb.s_flags.value_() & SB_FLAGS["RDONLY"])


def mnt_is_idmapped(mnt: Object) -> bool:
    """``is_idmapped_mnt()``.

    :param mnt: ``struct mount *``
    """
    kernel = mnt.prog_
    v = mnt.mnt
    # Since "fs: introduce dedicated idmap type for mounts" (v6.3) a mount
    # has mnt_idmap (&nop_mnt_idmap when not
    # idmapped); before, mnt_userns (&init_user_ns).
    if v.has_member_("mnt_idmap"):
        sym = kernel.symbols.get("nop_mnt_idmap")
        return sym is not None and v.mnt_idmap.value_() != sym.address
    if v.has_member_("mnt_userns"):
        sym = kernel.symbols.get("init_user_ns")
        return sym is not None and v.mnt_userns.value_() != sym.address
    return False


def mount_options(mnt: Object) -> str:
    """The options column of /proc/mounts (fs/proc_namespace.c show_vfsmnt()):
    ro/rw, superblock flags, mount flags, then the filesystem's own
    ``show_options``.  That last part is rebuilt for tmpfs/devtmpfs (shmem),
    proc, sysfs and other kernfs without options, and ramfs; for other
    filesystems that have a ``show_options`` it is left out and a warning
    is recorded.

    :param mnt: ``struct mount *``
    """
    kernel = mnt.prog_
    v = mnt.mnt
    sb = v.mnt_sb
    sb_flags = sb.s_flags.value_()
    mnt_flags = v.mnt_flags.value_()
    out = ["ro" if mount_readonly(mnt) else "rw"]
    out += [s for name, s in _SB_OPTS if sb_flags & SB_FLAGS[name]]
    out += [s for name, s in _MNT_OPTS if mnt_flags & MNT_FLAGS[name]]
    if mnt_is_idmapped(mnt):
        out.append(",idmapped")
    fn = sb.s_op.show_options.value_()
    if fn:
        name = _sym_name(kernel, fn)
        show = _SHOW_OPTIONS.get(name)
        if show is None:
            walk_warn(kernel, f"mount_options: {mount_fstype(mnt)} options come from "
                            f"{name or hex(fn)}(), which kql does not know; left out")
        else:
            out.append(show(sb))
    return "".join(out)


# -- per-filesystem show_options --------------------------------------------------------

_SHMEM_HUGE = {0: "never", 1: "always", 2: "within_size", 3: "advise", -1: "deny", -2: "force"}
_MPOL_MODES = ("default", "prefer", "bind", "interleave", "local", "prefer (many)",
               "weighted interleave")


def _shmem_show_options(sb: Object) -> str:
    """mm/shmem.c shmem_show_options()."""
    kernel = sb.prog_
    info = Object(kernel, "struct shmem_sb_info", sb.s_fs_info.value_()).read_()
    from kql.helpers.mm import page_shift
    from kql.helpers.mmstat import totalhigh_pages, totalram_pages
    nr_pages = totalram_pages(kernel)
    out = []
    max_blocks = info.max_blocks.value_()
    # shmem_default_max_blocks() is totalram_pages() / 2 *now*: a mount made
    # before boot freed init memory shows its size.
    if max_blocks != nr_pages // 2:
        out.append(",size=%dk" % (max_blocks << (page_shift(kernel) - 10)))
    # shmem_default_max_inodes(): min(totalram - totalhigh, totalram / 2)
    if info.max_inodes.value_() != min(nr_pages - totalhigh_pages(kernel), nr_pages // 2):
        out.append(",nr_inodes=%d" % info.max_inodes.value_())
    mode = info.mode.value_()
    if mode != 0o1777:
        out.append(",mode=%03o" % mode)
    uid, gid = info.uid.val.value_(), info.gid.val.value_()
    if uid:
        out.append(",uid=%d" % uid)
    if gid:
        out.append(",gid=%d" % gid)
    # Shown as inode64/inode32 whenever CONFIG_TMPFS_INODE64=y; kql cannot
    # see the config, so inode32 (full_inums false) is left out.
    if info.full_inums.value_():
        out.append(",inode64")
    huge = info.huge.value_()
    if huge:
        if huge > 127:
            huge -= 256
        out.append(",huge=" + _SHMEM_HUGE.get(huge, str(huge)))
    mpol = info.mpol.value_()
    if mpol:
        mode = Object(kernel, "struct mempolicy", mpol).mode.value_()
        if mode:
            out.append(",mpol=" + (_MPOL_MODES[mode] if mode < len(_MPOL_MODES) else str(mode)))
    # Since "shmem: add support to ignore swap" (v6.4)
    if info.has_member_("noswap") and info.noswap.value_():
        out.append(",noswap")
    return "".join(out)


_HIDEPID = {0: "off", 1: "noaccess", 2: "invisible", 4: "ptraceable"}


def _proc_show_options(sb: Object) -> str:
    """fs/proc/root.c proc_show_options()."""
    info = Object(sb.prog_, "struct proc_fs_info", sb.s_fs_info.value_())
    out = []
    gid = info.pid_gid.val.value_()
    if gid:
        out.append(",gid=%d" % gid)
    hide = info.hide_pid.value_()
    if hide:
        out.append(",hidepid=" + _HIDEPID.get(hide, str(hide)))
    if info.has_member_("pidonly") and info.pidonly.value_():
        out.append(",subset=pid")
    return "".join(out)


def _kernfs_show_options(sb: Object) -> str:
    """fs/kernfs/mount.c kernfs_sop_show_options(): the kernfs root's
    syscall_ops->show_options (none for sysfs)."""
    kernel = sb.prog_
    # kernfs_info(sb)->root
    kroot = Object(kernel, "struct kernfs_super_info", sb.s_fs_info.value_()).root
    ops = kroot.syscall_ops.value_()
    if ops:
        fn = Object(kernel, "struct kernfs_syscall_ops", ops).show_options.value_()
        if fn:
            raise ValueError(f"kernfs options from {_sym_name(kernel, fn) or hex(fn)}() "
                             f"are not known to kql")
    return ""


def _ramfs_show_options(sb: Object) -> str:
    """fs/ramfs/inode.c ramfs_show_options() (RAMFS_DEFAULT_MODE 0755)."""
    fsi = Object(sb.prog_, "struct ramfs_fs_info", sb.s_fs_info.value_())
    mode = fsi.mount_opts.mode.value_()
    return ",mode=%o" % mode if mode != 0o755 else ""


_SHOW_OPTIONS = {
    "shmem_show_options": _shmem_show_options,
    "proc_show_options": _proc_show_options,
    "kernfs_sop_show_options": _kernfs_show_options,
    "ramfs_show_options": _ramfs_show_options,
}


# -- file descriptors --------------------------------------------------------------------

def fdtable_max_fds(files: Object) -> int:
    """``files->fdt->max_fds``.

    :param files: ``struct files_struct *``
    """
    return files.fdt.max_fds.value_()


def for_each_file(task: Object) -> Iterator[tuple[int, Object]]:
    """The open files of a task (``files->fdt->fd[]``), in fd order.

    :param task: ``struct task_struct *``
    :return: iterator of ``(fd, struct file *)``
    """
    kernel = task.prog_
    files = task.files
    if not files.value_():
        return
    fdt = files.fdt.read_()
    max_fds = fdt.max_fds.value_()
    if max_fds > 1 << 24:
        walk_warn(kernel, f"for_each_file: task {task.value_():#x} has max_fds {max_fds}; "
                        f"corrupt fdtable")
        return
    fd_array = fdt.fd.value_()
    pt = pointer_to(kernel.types.find_type("struct file"))
    chunk = 512
    for base in range(0, max_fds, chunk):
        n = min(chunk, max_fds - base)
        try:
            psize = kernel.arch.pointer_size
            raw = kernel.read(fd_array + psize * base, psize * n)
        except FaultError as e:
            walk_warn(kernel, f"for_each_file: fd array of task {task.value_():#x} "
                            f"unreadable at fd {base}: {e}")
            return
        for i in range(n):
            f = int.from_bytes(raw[psize * i:psize * (i + 1)], "little")
            if f:
                yield base + i, _ptr(kernel, pt, f)


def file_inode(file: Object) -> Object:
    """``file_inode()``.

    :param file: ``struct file *``
    :return: ``struct inode *``
    """
    return file.f_inode


def inode_type(inode: Object) -> str:
    """'REG', 'DIR', 'CHR', 'BLK', 'FIFO', 'SOCK', 'LNK' or 'ANON' from ``i_mode``.

    :param inode: ``struct inode *``
    """
    mode = inode.i_mode.value_()
    t = S_IFMT_NAMES.get(stat.S_IFMT(mode))
    if t is None:
        raise ValueError(f"inode {inode.value_():#x}: bad i_mode {mode:#o}")
    return t
