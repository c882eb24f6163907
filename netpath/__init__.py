"""netpath: authenticated heartbeat packets for network and serial links.

  wire.py       the packet (construct definition, encode, decode that never raises)
  keys.py       key file format, permission rule, keygen
  replay.py     which authenticated packets are fresh (I/O-free rules)
  receiver.py   bytes -> Beat for one region, drops counted by reason
  transport.py  UDP sockets: unicast peers, multicast, broadcast, bind to address or interface
  framing.py    serial framing (COBS + CRC-32C)
  metrics.py    Prometheus counters (diskhb_net_*)
The region drivers that use them are diskhb.regions.net and diskhb.regions.serial.
"""
