"""The audit log: security events in the database and, the same, as JSON log lines (`log`).

May import `storage` (and `wardgate.errors`); every service above it records through it.
"""
