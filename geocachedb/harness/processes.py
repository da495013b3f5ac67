"""Real `twistd -n geocache` processes, for integration tests and
benchmarks.  The child inherits this interpreter's environment, so set
PYTHONPATH to run a checkout other than the installed one.

Every process is started on free loopback ports with its own data directory
and log file, and is stopped by its PID (`stop`/`kill`) — callers use
`Cluster.stop_all` in tearDown/finally so nothing outlives them.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from geocachedb.harness import procstat
from geocachedb.client.blocking import BlockingClient

BIN = os.path.dirname(sys.executable)


def twistd_command():
    twistd = os.path.join(BIN, "twistd")
    if os.path.exists(twistd):
        return [twistd]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class LoggedProcess:
    """A child process whose output goes to ``log_path``, stopped by its
    PID.  Subclasses set ``log_path`` and start with `_spawn`."""

    log_path = None
    proc = None

    def _spawn(self, cmd, env=None):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        finally:
            log.close()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout=10.0):
        """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL
        if it has not exited within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_seconds(self):
        """User + system CPU time the process has used so far."""
        return procstat.cpu_seconds(self.proc.pid)

    def rss_bytes(self):
        return procstat.rss_bytes(self.proc.pid)

    def read_log(self, tail=None):
        """The log (its last ``tail`` characters when given)."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]


class NodeProcess(LoggedProcess):
    def __init__(self, node_id, port, data_dir, log_path, peers=None, extra=(), admin_port=None):
        self.node_id = node_id
        self.port = port
        self.address = "127.0.0.1:%d" % port
        self.data_dir = data_dir
        self.log_path = log_path
        self.peers = peers or {}
        self.extra = list(extra)
        self.admin_port = admin_port or free_port()
        self.proc = None

    def command(self):
        cmd = twistd_command() + [
            "-n",
            "--pidfile=",
            "geocache",
            "--id", self.node_id,
            "--listen", "tcp:%d:interface=127.0.0.1" % self.port,
            "--data", self.data_dir,
            "--admin", "tcp:%d:interface=127.0.0.1" % self.admin_port,
        ]
        if self.peers:
            cmd += ["--peers", ",".join("%s=%s" % kv for kv in sorted(self.peers.items()))]
        return cmd + self.extra

    def start(self):
        return self._spawn(self.command())

    def wait_listening(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError("node %s exited (%s):\n%s" % (self.node_id, self.proc.returncode, self.read_log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("node %s did not listen within %ss:\n%s" % (self.node_id, timeout, self.read_log()))


    def client(self, timeout=5.0):
        return BlockingClient([self.address], timeout=timeout)


class Cluster:
    """``n`` nodes (node1..noden) with each other as peers."""

    def __init__(self, base_dir, n=3, extra=()):
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        ports = {("node%d" % i): free_port() for i in range(1, n + 1)}
        self.nodes = {}
        for node_id, port in ports.items():
            peers = {p: "127.0.0.1:%d" % q for p, q in ports.items() if p != node_id}
            self.nodes[node_id] = NodeProcess(
                node_id,
                port,
                os.path.join(base_dir, node_id),
                os.path.join(base_dir, node_id + ".log"),
                peers,
                extra,
            )

    def __getitem__(self, node_id):
        return self.nodes[node_id]

    @property
    def addresses(self):
        return [n.address for n in self.nodes.values()]

    def start(self, wait=True):
        for node in self.nodes.values():
            node.start()
        if wait:
            for node in self.nodes.values():
                node.wait_listening()
        return self

    def stop_all(self):
        for node in self.nodes.values():
            try:
                node.stop(timeout=5)
            except Exception:
                node.kill()

    def leader(self, timeout=10.0, among=None, other_than=None):
        """The id of the node that all live nodes (or ``among``) agree leads
        (waiting for one that is not ``other_than``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            for node in self.nodes.values():
                if among is not None and node.node_id not in among:
                    continue
                if not node.alive():
                    continue
                try:
                    with BlockingClient([node.address], timeout=1.0) as c:
                        status = c.status()
                except Exception:
                    leaders.add(None)
                    continue
                leaders.add(status["leader"])
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                if self.nodes[leader].alive() and leader != other_than:
                    return leader
            time.sleep(0.1)
        raise RuntimeError("no agreed leader within %ss" % timeout)


def _strip_telnet(data):
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0xFF and i + 1 < len(data):
            i += 3 if data[i + 1] in (0xFB, 0xFC, 0xFD, 0xFE) else 2
            continue
        out.append(data[i])
        i += 1
    return bytes(out)


def admin_command(node, command, timeout=10.0):
    """Log in to ``node``'s admin shell over a raw socket, run ``command``
    and return its output (text between the command and the next prompt)."""
    with open(os.path.join(node.data_dir, "admin.password")) as f:
        password = f.read().strip()
    s = socket.create_connection(("127.0.0.1", node.admin_port), timeout=timeout)
    try:
        def read_until(marker):
            buf = b""
            deadline = time.monotonic() + timeout
            while marker not in _strip_telnet(buf):
                if time.monotonic() > deadline:
                    raise RuntimeError("admin shell: no %r in %r" % (marker, buf))
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("admin shell closed: %r" % buf)
                buf += chunk
            return _strip_telnet(buf).decode("utf-8", "replace")

        read_until(b"Password: ")
        s.sendall(password.encode() + b"\r\n")
        read_until(b")> ")
        s.sendall(command.encode() + b"\r\n")
        out = read_until(b")> ")
        s.sendall(b"quit\r\n")
        return out.rsplit("\n", 1)[0]
    finally:
        s.close()


def checkout_cluster(checkout, base_dir, n, extra=()):
    """A started `Cluster` whose nodes run the code of another checkout
    (its path first on the nodes' PYTHONPATH; this process is unchanged):
    for A/B benchmarks of two commits."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.path.abspath(checkout)  # inherited by the nodes
    try:
        cluster = Cluster(base_dir, n, extra=extra)
        cluster.start()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    return cluster
