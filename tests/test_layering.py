"""The layers keep to their side: the client library imports no server
module, so it can be installed and imported without them; and no two parts
of geocachedb (its top-level modules and packages) import each other.

Two checks, because either alone misses something: importing every
`geocachedb.client` module in a fresh interpreter sees what really loads
(including what the modules it imports pull in), and reading the import
statements of every module the client can reach, those inside functions
included, sees the imports that only run later (a ``backup`` that imports
the snapshot reader when it is called).
"""

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "geocachedb")

# What a client may not depend on: the node and everything behind it.
SERVER = (
    "geocachedb.node",
    "geocachedb.server",
    "geocachedb.storage",
    "geocachedb.sessions",
    "geocachedb.statemachine",
    "geocachedb.mvcc",
    "geocachedb.commands",
    "geocachedb.replica",
    "geocachedb.raft",
    "geocachedb.wal",
    "geocachedb.snapshots",
    "geocachedb.admin",
    "geocachedb.tap",
    "geocachedb.testing",
    "geocachedb.harness",
    "geocachedb.bench",
)


def is_server(name):
    return any(name == s or name.startswith(s + ".") for s in SERVER)


def module_path(name):
    """The source file of geocachedb module ``name``, or None."""
    base = os.path.join(ROOT, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def client_modules():
    names = []
    for folder, _, files in os.walk(os.path.join(PACKAGE, "client")):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[: -len(".py")]
                name = rel.replace(os.sep, ".")
                names.append(name[: -len(".__init__")] if name.endswith(".__init__") else name)
    return sorted(names)


def imported_names(path, name):
    """Every geocachedb module an import statement in ``path`` names, at
    any depth (function bodies included)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            # ``from geocachedb import errors`` names a module too.
            found.update(module + "." + alias.name for alias in node.names
                         if module_path(module + "." + alias.name))
    return {n for n in found if n == "geocachedb" or n.startswith("geocachedb.")}


def reachable_from(roots):
    """{module: the module that imports it} for every geocachedb module the
    import statements of ``roots`` lead to, transitively."""
    seen = {root: None for root in roots}
    pending = list(roots)  # the worklist of the walk
    while pending:
        name = pending.pop()
        path = module_path(name)
        if path is None:
            continue
        for imported in imported_names(path, name):
            # Importing a.b.c runs a/__init__ and a/b/__init__ as well.
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix not in seen and module_path(prefix):
                    seen[prefix] = name
                    pending.append(prefix)
    return seen


def all_modules():
    names = []
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), ROOT)[: -len(".py")].replace(os.sep, ".")
                names.append(name[: -len(".__init__")] if name.endswith(".__init__") else name)
    return sorted(names)


def part_of(name):
    """The top-level part of geocachedb a module belongs to:
    geocachedb.node.peers -> geocachedb.node, geocachedb.tap -> itself."""
    return ".".join(name.split(".")[:2])


def part_cycles():
    """Import cycles between the parts of geocachedb, as lists of edges
    ``(importer, imported, by module)``."""
    edges = {}
    for name in all_modules():
        for imported in imported_names(module_path(name), name):
            a, b = part_of(name), part_of(imported)
            if a != b and b != "geocachedb":
                edges.setdefault(a, {}).setdefault(b, name)
    cycles = []

    def walk(path):
        for nxt, by in sorted(edges.get(path[-1][1], {}).items()):
            if nxt == path[0][0]:
                cycles.append(path + [(path[-1][1], nxt, by)])
            elif nxt > path[0][0] and nxt not in [p[1] for p in path]:
                walk(path + [(path[-1][1], nxt, by)])

    for start in sorted(edges):
        for nxt, by in sorted(edges[start].items()):
            if nxt == start:
                continue
            if nxt > start:
                walk([(start, nxt, by)])
    return cycles


class ClientLayerTests(SynchronousTestCase):
    def test_importing_every_client_module_loads_no_server_module(self):
        modules = client_modules()
        self.assertIn("geocachedb.client.blocking", modules)
        script = (
            "import importlib, sys\n"
            "for name in %r:\n"
            "    importlib.import_module(name)\n"
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('geocachedb'))))\n" % (modules,)
        )
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
        ).stdout.split()
        self.assertIn("geocachedb.client.core", out)
        self.assertEqual([m for m in out if is_server(m)], [])

    def test_no_client_module_imports_a_server_module_even_inside_a_function(self):
        reached = reachable_from(client_modules())
        leaks = sorted("%s (imported by %s)" % (m, by) for m, by in reached.items() if is_server(m))
        self.assertEqual(leaks, [])
        self.assertIn("geocachedb.snapshot_format", reached)  # the walk does look inside functions

    def test_the_static_check_sees_an_import_inside_a_function(self):
        # The check of the check: a server module imported by a function of
        # a server module is found (geocachedb.tap imports geocachedb.node
        # only inside makeService).
        reached = reachable_from(["geocachedb.tap"])
        self.assertIn("geocachedb.node.node", reached)


class CycleTests(SynchronousTestCase):
    def test_no_two_parts_of_geocachedb_import_each_other(self):
        # For example bench -> harness -> client is fine; harness -> bench
        # (for procstat) with bench -> harness was a cycle, and so was
        # client -> node (for set_no_delay) with node -> client (to join).
        described = [
            cycle[0][0] + "".join(" -> %s (imported in %s)" % (b, by) for _, b, by in cycle)
            for cycle in part_cycles()
        ]
        self.assertEqual(described, [])
