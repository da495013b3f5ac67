# Two commands for a new machine with only Python 3.11:
#   make run    create the virtual environment, install, start a local cluster
#   make test   install what the tests need and run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install test-deps proto bench sim clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat editable mode puts the checkout on sys.path, which is where
	# twistd looks for plugins (a strict editable install would hide them).
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

install: $(STAMP)

# The real-telnet test drives /usr/bin/telnet and the etcd side-by-side
# test a real etcd; install them when missing and when we can (root with
# apt).  Without them those tests say why they skip.
test-deps: $(STAMP)
	@{ command -v telnet && command -v etcd; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq telnet etcd-server) >/dev/null 2>&1 \
	      || echo "warning: could not install telnet and etcd-server"; \
	  else echo "note: telnet or etcd is not installed (needs root and apt-get)"; fi; }

test: test-deps
	$(PY) -m pytest -q -ra tests

run: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/run-raft-cluster.sh

# Regenerate the wire module from proto/geocache.proto.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=geocachedb/wire --pyi_out=geocachedb/wire proto/geocache.proto

sim: $(STAMP)
	$(PY) -m geocachedb.testing.sim --seeds 1000 --nodes 5

clean:
	rm -rf $(VENV) build *.egg-info data _trial_temp
