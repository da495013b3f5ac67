"""A real etcd cluster of 1 or 3 members on loopback, for the comparison.

Each member is an ``etcd`` process with its own data directory and log file
under one base directory, on free 127.0.0.1 ports, with etcd's defaults
otherwise (fsync on, 100 ms heartbeat, 1 s election timeout — the same as a
geocachedb node's defaults).  Members are stopped by PID (`stop_all`, which
callers run in ``finally``).  The leader is found with the Maintenance
Status RPC (`etcd_wire.parse_status`).
"""

import os
import re
import shutil
import signal
import subprocess
import time

from geocachedb.bench import etcd_wire
from geocachedb.harness.processes import LoggedProcess, free_port

HOW_TO_GET_ETCD = """\
compare-etcd needs an etcd 3.4 server binary named 'etcd' on PATH, and found none.
  Debian/Ubuntu:  apt-get install etcd-server     (Debian 12 ships etcd 3.4.23)
  elsewhere:      put the 'etcd' binary of an etcd v3.4 release on PATH,
                  or pass --etcd /path/to/etcd"""


def find_etcd(binary=None):
    """The path of the etcd binary (``binary`` or ``etcd`` on PATH), or None."""
    if binary:
        return binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else shutil.which(binary)
    return shutil.which("etcd")


def etcd_version(path):
    """``"3.4.23"`` from ``etcd --version`` (or ``"unknown"``)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else "unknown"


def _clean_env():
    # ETCD_* variables would silently override the flags below.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


class EtcdMember(LoggedProcess):
    def __init__(self, name, client_port, peer_port, data_dir, log_path, binary):
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.address = "127.0.0.1:%d" % client_port
        self.peer_url = "http://127.0.0.1:%d" % peer_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.binary = binary
        self.proc = None

    def command(self, initial_cluster):
        client_url = "http://%s" % self.address
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", "geocache-compare",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]

    def start(self, initial_cluster):
        return self._spawn(self.command(initial_cluster), env=_clean_env())

    def status(self, timeout=1.0):
        """The member's Maintenance Status (see `etcd_wire.parse_status`)."""
        import grpc

        with grpc.insecure_channel(self.address) as channel:
            raw = channel.unary_unary(etcd_wire.STATUS)(b"", timeout=timeout)
        return etcd_wire.parse_status(raw)

    def read_log(self, tail=4000):
        return super().read_log(tail)


class EtcdCluster:
    """``n`` members (etcd1..etcdn) under ``base_dir``."""

    def __init__(self, base_dir, n=3, binary="etcd"):
        os.makedirs(base_dir, exist_ok=True)
        self.members = {}
        for i in range(1, n + 1):
            name = "etcd%d" % i
            self.members[name] = EtcdMember(
                name, free_port(), free_port(),
                os.path.join(base_dir, name), os.path.join(base_dir, name + ".log"), binary,
            )

    def __getitem__(self, name):
        return self.members[name]

    @property
    def addresses(self):
        return [m.address for m in self.members.values()]

    def start(self, timeout=30.0):
        initial = ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members.values())
        for m in self.members.values():
            m.start(initial)
        self.leader(timeout)
        return self

    def leader(self, timeout=10.0):
        """The name of the member that every member names as leader."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            for m in self.members.values():
                if not m.alive():
                    raise RuntimeError("etcd member %s exited (%s):\n%s" % (m.name, m.proc.returncode, m.read_log()))
            try:
                statuses = {name: m.status() for name, m in self.members.items()}
            except Exception as e:  # not serving yet
                last_error = e
                time.sleep(0.1)
                continue
            leaders = {s["leader"] for s in statuses.values()}
            if len(leaders) == 1 and 0 not in leaders:
                (leader_id,) = leaders
                for name, s in statuses.items():
                    if s["member_id"] == leader_id:
                        return name
            time.sleep(0.1)
        raise RuntimeError("etcd: no agreed leader within %ss (%s)" % (timeout, last_error))

    def stop_all(self):
        for m in self.members.values():
            try:
                m.stop(timeout=10)
            except Exception:
                if m.alive():
                    os.kill(m.pid, signal.SIGKILL)
