"""CPU time and memory of a process by PID, from /proc (Linux).

The comparison charges each server the user + system CPU time its process
used over the load window (the same counters `top` and `ps` read), so the
figure does not depend on how busy the rest of the machine was.
"""

import os

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(pid):
    """(user, system) CPU seconds process ``pid`` has used so far (its
    threads included; waited-for children not)."""
    with open("/proc/%d/stat" % pid) as f:
        # The command name (field 2) may hold spaces; fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid):
    """User + system CPU seconds process ``pid`` has used so far."""
    return sum(cpu_times(pid))


def rss_bytes(pid):
    """Resident set size of ``pid`` in bytes (0 when not known)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
