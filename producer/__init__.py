"""imgq producers: the Python client, the HTTP API and the producer-side CLI commands.

Users import the client from ``imgq``; the `imgq` command itself lives in ``imgq.cli``.
"""
