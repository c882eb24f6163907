"""Notification hooks: events.py says which core events notify and what they carry (I/O-free),
runner.py runs the executables, bounded, off the daemon's loop."""
