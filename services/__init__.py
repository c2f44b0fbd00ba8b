"""The domain: machines, networks, jobs, audit. Knows nothing about Slack or HTTP."""
