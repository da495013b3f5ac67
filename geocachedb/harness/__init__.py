"""The real-process harness: `twistd -n geocache` nodes (and other servers)
as child processes on loopback ports, driven from outside.

- `geocachedb.harness.processes`: `NodeProcess`, `Cluster`, `LoggedProcess`,
  `free_port`, `admin_command` (log in to a node's admin shell and run one
  command).
- `geocachedb.harness.procstat`: CPU time and memory of a process by PID.

Used by the integration tests (tests/integration/), tests/test_bench.py,
`geocache-bench compare-etcd`, `geocachedb.bench.profile` and the scripts in
bench/.  It depends only on the client library, never on the simulator
(`geocachedb.testing`) or the benchmark (`geocachedb.bench`), so both of
those can use it without a cycle.
"""
