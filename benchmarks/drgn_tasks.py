"""drgn side of the tasks benchmark: print pid, comm, state of every task as CSV.

Run as: python drgn_tasks.py VMCORE VMLINUX
"""
import sys

import drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import task_state_to_char

prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
out = ["pid,comm,state"]
for task in for_each_task(prog):
    out.append(f"{task.pid.value_()},{task.comm.string_().decode()},{task_state_to_char(task)}")
sys.stdout.write("\n".join(out) + "\n")
