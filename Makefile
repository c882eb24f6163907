# make demo: a 3-node cluster on a file-backed region.  make test: the whole suite.
# Both bootstrap .venv and, when root, the Debian packages they need.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEB_PKGS := fuse3 libfuse3-3 e2fsprogs fdisk iproute2 util-linux socat stress-ng dosfstools btrfs-progs cryptsetup-bin dmsetup prometheus \
            tgt libiscsi7 libiscsi-bin sg3-utils resource-agents pacemaker-cli-utils fence-agents libxml2-utils
# Commands whose absence means "install DEB_PKGS" (one per package that provides a tool we run).
DEB_PROBES := fusermount3 mkfs.ext4 sfdisk ip losetup setpriv socat stress-ng mkfs.vfat mkfs.btrfs cryptsetup dmsetup promtool \
              tgtd iscsi-ls sg_persist ocf-tester crm_resource fence_ipmilan xmllint

# make install: a venv of its own under LIBDIR (the system Python stays untouched: Debian's is
# "externally managed", and our pinned dependencies cannot clash with its packages), the command
# linked into BINDIR (contrib/systemd/diskhb.service runs /usr/local/bin/diskhb), the man page and
# bash completion. Run it again to upgrade; `rm -rf $(LIBDIR)` and the three files to remove it.
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib/diskhb
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man/man1
COMPDIR ?= $(PREFIX)/share/bash-completion/completions

.PHONY: demo test deps venv bench bench-sim bench-cts bench-cts-pr stress clean install man install-agents \
	uninstall-agents

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

deps:
	@missing=0; for c in $(DEB_PROBES); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	[ -e /usr/lib/x86_64-linux-gnu/libfuse3.so.3 ] || ls /usr/lib/*/libfuse3.so.3 >/dev/null 2>&1 || missing=1; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEB_PKGS)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS) >/dev/null; \
	  else echo "note: not root; missing Debian packages ($(DEB_PKGS)) -> some tests will skip"; fi; \
	fi

demo: deps $(STAMP)
	$(VPY) tools/demo.py

test: deps $(STAMP)
	$(VPY) -m pytest -q tests

# Every benchmark in BENCHMARKS.md but the 10-minute stress run (make stress).
bench: deps $(STAMP)
	$(VPY) -m tools.bench.detection
	for mix in disk net both; do $(VPY) -m tools.bench.detection --only detection --mix $$mix --interval-ms 100 --dead-ms 1000; done
	$(VPY) -m tools.bench.netpeers
	$(VPY) -m tools.bench.mmp
	$(VPY) -m tools.bench.failover --reps 5 --scsi-pr
	$(VPY) -m tools.bench.failover --reps 5 --scsi-pr --no-pill --fast

# The simulator's bench run (about an hour on 2 cores): 100,000 schedules, 0 violations expected;
# then each fix of schedules A-E reverted in a scratch copy, against the CI budget of 2,000 seeds.
bench-sim: $(STAMP)
	$(VPY) -m tools.sim --seeds 100000
	$(VPY) -m tools.sim.reverts --seeds 2000

# The cluster test system's bench run (about an hour): 210 seeded fault schedules on real daemons.
bench-cts: deps $(STAMP)
	$(VPY) -m tools.cts --schedules 210 --seed 1000

# The same with SCSI-PR fencing (a private tgtd on the test net 10.77.13.0/24; a third resource
# written through iSCSI, PR-FENCED-WRITE): 210 schedules, about an hour.
bench-cts-pr: deps $(STAMP)
	$(VPY) -m tools.cts --schedules 210 --seed 3000 --scsi-pr --net 13

stress: deps $(STAMP)
	$(VPY) -m tools.bench.stress --duration-s 600

install:
	$(PY) -m venv $(LIBDIR)
	$(LIBDIR)/bin/python -m pip install -q .
	install -d $(BINDIR) $(MANDIR) $(COMPDIR)
	ln -sfn $(LIBDIR)/bin/diskhb $(BINDIR)/diskhb
	$(LIBDIR)/bin/python tools/manpage.py -o $(MANDIR)/diskhb.1
	_DISKHB_COMPLETE=bash_source $(LIBDIR)/bin/diskhb > $(COMPDIR)/diskhb
	@echo "installed $(BINDIR)/diskhb ($$($(BINDIR)/diskhb --version)), man diskhb, bash completion"

# diskhb.1 from the click help (make install writes it to MANDIR).
man: $(STAMP)
	$(VPY) tools/manpage.py -o diskhb.1

# make install-agents (after make install): the Pacemaker agents (README "Pacemaker"): the resource
# agent ocf:diskhb:guard where Pacemaker looks for it, and /usr/sbin/fence_diskhb (where Pacemaker
# looks for fence agents) linked to the fence agent's console script in LIBDIR's venv. DESTDIR for
# packages; make uninstall-agents removes both.
OCF_PROVIDER_DIR ?= /usr/lib/ocf/resource.d/diskhb
FENCE_DIR ?= /usr/sbin

install-agents:
	@test -x $(LIBDIR)/bin/fence_diskhb || { echo "no $(LIBDIR)/bin/fence_diskhb: run make install first (or pass LIBDIR=DIR)" >&2; exit 2; }
	install -D -m 0755 contrib/ocf/guard $(DESTDIR)$(OCF_PROVIDER_DIR)/guard
	install -d $(DESTDIR)$(FENCE_DIR)
	ln -sfn $(LIBDIR)/bin/fence_diskhb $(DESTDIR)$(FENCE_DIR)/fence_diskhb

uninstall-agents:
	rm -f $(DESTDIR)$(OCF_PROVIDER_DIR)/guard $(DESTDIR)$(FENCE_DIR)/fence_diskhb
	-rmdir $(DESTDIR)$(OCF_PROVIDER_DIR)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache diskhb.1
