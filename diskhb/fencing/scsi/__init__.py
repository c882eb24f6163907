"""SCSI-3 persistent reservations over any transport that can send a raw CDB (SPC-4).

The CDBs, the PR IN data and the sense data are built and parsed here once, in pure functions
(cdb.py, pr_in.py, sense.py); a transport only moves bytes (transport.py). So what the iSCSI
tests prove against tgt holds for SG_IO on a local device too.
"""
