"""The package as a user installs it: the wheel carries the twistd plugin
(without the __init__.py files that would break every other plugin) and the
console scripts, and twistd finds `geocache`."""

import os
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WheelTests(SynchronousTestCase):
    def test_wheel_contents(self):
        out = os.path.abspath(self.mktemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, ROOT],
            check=True, capture_output=True,
        )
        (wheel,) = [f for f in os.listdir(out) if f.endswith(".whl")]
        with zipfile.ZipFile(os.path.join(out, wheel)) as z:
            names = set(z.namelist())
            entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        self.assertIn("twisted/plugins/geocache_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        for package in ("geocachedb/raft/core.py", "geocachedb/wal/log.py", "geocachedb/admin/shell.py",
                        "geocachedb/storage/btree/__init__.py", "geocachedb/wire/geocache_pb2.py",
                        "geocachedb/harness/processes.py", "geocachedb/net.py", "geocachedb/snapshot_format.py"):
            self.assertIn(package, names)
        self.assertIn("geocache-cli = geocachedb.client.cli:main", entry_points)
        self.assertIn("geocache-bench = geocachedb.bench.cli:main", entry_points)

    def test_twistd_lists_the_plugin(self):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        out = subprocess.run([twistd, "--help"], capture_output=True, text=True, check=True).stdout
        self.assertIn("geocache", out)
        out = subprocess.run([twistd, "-n", "geocache", "--help"], capture_output=True, text=True, check=True).stdout
        for option in ("--listen", "--peers", "--cluster-id", "--storage", "--data", "--admin", "--max-frame",
                       "--heartbeat-interval", "--election-timeout", "--enable-fault-injection"):
            self.assertIn(option, out)
