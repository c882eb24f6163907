"""I/O fencing: cutting a victim off the shared storage (issue 11), and STONITH as the last resort.

method.py        the interface every fencing method offers the fence runner (Victim, MethodResult)
runner.py        the fence runner: the configured methods in order, off the tick, each bounded
methods.py       the configured methods built at start ([node] fence), their time bounds
keeper.py        this node's registration over the daemon's life: register once quorate, audit
agent.py         the "agent" method: STONITH through a Pacemaker-style fence agent (off, verified by status)
pr_key.py        the reservation key of a node incarnation (I/O-free)
scsi_pr.py       the "scsi-pr" method: this node's registration on the guarded LUNs (unfence), the
                 fence (PREEMPT of the victim's key, read back on every LUN), the read-only audit
scsi/            SCSI-3 persistent reservations: cdb.py, pr_in.py, sense.py (I/O-free wire formats),
                 pr.py (one PR command over a transport), transport.py (the interface),
                 sg_io.py (a local sg/block device), iscsi.py (libiscsi over TCP)
(the disk pill, the third method, is diskhb/pill.py: it writes the victim's mailbox)
"""
