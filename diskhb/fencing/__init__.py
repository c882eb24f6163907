"""I/O fencing: cutting a victim off the shared storage (issue 11).

pr_key.py        the reservation key of a node incarnation (I/O-free)
scsi/            SCSI-3 persistent reservations: cdb.py, pr_in.py, sense.py (I/O-free wire formats),
                 pr.py (one PR command over a transport), transport.py (the interface),
                 sg_io.py (a local sg/block device), iscsi.py (libiscsi over TCP)
"""
