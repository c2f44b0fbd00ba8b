"""The core every capability uses: the one program runner, the store, durable jobs,
the audit log, the error tree and templating."""
