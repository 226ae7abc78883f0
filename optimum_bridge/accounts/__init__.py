"""Accounts created at runtime (spec §12a): stored in Redis, merged with the accounts file by every process.

``model`` checks what an integrator sends (the accounts file's rules), ``cipher``
encrypts the secrets with ``BRIDGE_SECRETS_KEY``, ``store`` reads and writes
them (the HTTP routes and the CLI share it), ``registry`` is a process's view of
every account, refreshed within a second of a change, and ``removal`` ends the
waiting jobs of a removed account.
"""
