"""Docker inside a machine: one feature flag, overlay2 storage on the host's own file
system, dockerd ready before the machine is, containers managed from chat."""
