"""Pacemaker integration: the fence agent fence_diskhb (the resource agent is contrib/ocf/guard)."""
