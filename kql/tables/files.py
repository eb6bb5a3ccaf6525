"""open_files and mounts: crash ``files`` and ``mount``, /proc/PID/fd and
/proc/mounts."""

from __future__ import annotations

from functools import cached_property


from kql.errors import FaultError
from kql.helpers.fs import (d_path, for_each_file, for_each_mount, inode_type, mount_devname,
                            mount_fstype, mount_options, mount_path, mount_readonly)
from kql.helpers.pid import find_processes, for_each_task_and_pid
from kql.helpers.sched import task_comm
from kql.helpers.list import walk_warn
from kql.tables.base import (ADDRESS, BOOL, Column, INT32, INT64, STRING, ScanContext,
                            TableSpec)

__all__ = ["TABLES", "FileRow"]


class FileRow:
    """One open file descriptor of one process."""

    def __init__(self, task, fd, file):
        self.task = task            # struct task_struct * (thread-group leader)
        self.fd = fd
        self.file = file            # struct file *

    @cached_property
    def f(self):
        return self.file.read_()

    @cached_property
    def inode(self):
        return self.file.f_inode

    def path(self) -> str:
        return d_path(self.f.f_path).decode(errors="surrogateescape")

    def comm(self) -> str:
        return task_comm(self.task)


def _process_files(kernel, task):
    try:
        for fd, file in for_each_file(task):
            yield FileRow(task, fd, file)
    except FaultError as e:
        walk_warn(kernel, f"open_files: fd table of task {task.value_():#x} unreadable: {e}")


def _rows(ctx: ScanContext):
    kernel = ctx.kernel
    for task in for_each_task_and_pid(kernel, leaders_only=True):
        yield from _process_files(kernel, task)


def _by_pid(ctx: ScanContext, values: list):
    kernel = ctx.kernel
    for task in find_processes(kernel, values):  # rows are per process: pid is the tgid
        yield from _process_files(kernel, task)


_by_pid.__name__ = "find_task"      # as EXPLAIN shows the lookup


def _mount_rows(ctx: ScanContext):
    return for_each_mount(ctx.kernel)


def _parent_id(m) -> int:
    return m.mnt_parent.mnt_id.value_()


TABLES = (
    TableSpec(
        name="open_files",
        doc="Every open file descriptor of every process (crash `files`, "
            "/proc/PID/fd): one row per (process, fd); threads share their "
            "process's table.",
        object_column="file",
        walk="for each process (init_task.tasks): files->fdt->fd[0..max_fds)",
        rows=_rows,
        lookups={"pid": _by_pid, "tgid": _by_pid},
        examples=(
            "SELECT pid, comm, fd, path FROM open_files WHERE type = 'SOCK'",
            "SELECT path, count(*) FROM open_files GROUP BY path ORDER BY 2 DESC",
        ),
        columns=(
            Column("pid", INT32, "process id (the thread-group leader's pid)",
                   lambda r: r.task.pid.value_()),
            Column("tgid", INT32, "thread-group id (= pid)",
                   lambda r: r.task.tgid.value_()),
            Column("comm", STRING, "the process's command name", FileRow.comm),
            Column("fd", INT32, "file descriptor number", lambda r: r.fd),
            Column("file", ADDRESS, "the open file (struct file *)",
                   lambda r: r.file.value_(), object_type="struct file *"),
            Column("path", STRING, "the path as /proc/PID/fd links show it (d_path "
                   "across mounts; 'socket:[ino]', 'pipe:[ino]', 'anon_inode:[eventpoll]'; "
                   "' (deleted)' when unlinked)", FileRow.path),
            Column("dentry", ADDRESS, "file->f_path.dentry (struct dentry *)",
                   lambda r: r.f.f_path.dentry.value_()),
            Column("inode", ADDRESS, "file->f_inode (struct inode *)",
                   lambda r: r.f.f_inode.value_()),
            Column("ino", INT64, "inode number (inode->i_ino)",
                   lambda r: r.inode.i_ino.value_()),
            Column("type", STRING, "'REG', 'DIR', 'CHR', 'BLK', 'FIFO', 'SOCK', 'LNK' "
                   "or 'ANON' (anonymous inode: eventfd, epoll, timerfd ...)",
                   lambda r: inode_type(r.inode)),
            Column("pos", INT64, "file position (file->f_pos)",
                   lambda r: r.f.f_pos.value_()),
            Column("flags", INT64, "open flags (file->f_flags: O_* bits; /proc fdinfo "
                   "shows them in octal)", lambda r: r.f.f_flags.value_()),
            Column("mode", INT64, "file->f_mode (FMODE_* bits)",
                   lambda r: r.f.f_mode.value_()),
        ),
    ),
    TableSpec(
        name="mounts",
        doc="The mounts of pid 1's mount namespace in /proc/mounts order (crash "
            "`mount`); device, path, fstype and options as /proc/mounts prints them.",
        object_column="mount",
        walk="pid 1's nsproxy->mnt_ns: the mount rbtree (6.8+) or list",
        rows=_mount_rows,
        examples=(
            "SELECT device, path, fstype, options FROM mounts",
            "SELECT path FROM mounts WHERE readonly",
        ),
        columns=(
            Column("mount", ADDRESS, "the mount (struct mount *)", lambda m: m.value_(),
                   object_type="struct mount *"),
            Column("superblock", ADDRESS, "its superblock (mnt.mnt_sb, struct super_block *)",
                   lambda m: m.mnt.mnt_sb.value_()),
            Column("fstype", STRING, "filesystem type (sb->s_type->name[.subtype])",
                   mount_fstype),
            Column("device", STRING, "device name as given to mount (mnt_devname; "
                   "'none' if unset)", mount_devname),
            Column("path", STRING, "mount point relative to pid 1's root (octal "
                   "escapes for space, tab, newline and backslash, as /proc/mounts)",
                   mount_path),
            Column("options", STRING, "options as /proc/mounts prints them: rw/ro, "
                   "superblock and mount flags, then the filesystem's own (known for "
                   "tmpfs/devtmpfs, proc, sysfs and other kernfs, ramfs; left out with a "
                   "warning for others)", mount_options),
            Column("readonly", BOOL, "read-only mount or superblock", mount_readonly),
            Column("mnt_id", INT32, "mount id (as /proc/PID/mountinfo)",
                   lambda m: m.mnt_id.value_()),
            Column("parent_id", INT32, "parent mount's id (its own for the "
                   "namespace root)", _parent_id),
            Column("flags", INT64, "mnt.mnt_flags (MNT_* bits)",
                   lambda m: m.mnt.mnt_flags.value_()),
        ),
    ),
)
