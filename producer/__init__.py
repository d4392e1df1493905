"""imgq producers: the Python client, the `imgq` CLI and the HTTP API."""
