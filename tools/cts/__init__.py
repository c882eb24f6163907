"""The cluster test system (issue 10, part 7): real daemons in namespaces, seeded faults, audited
writes. Run it with `python -m tools.cts --schedules N --seed S` (tools/cts/__main__.py)."""
