"""The runtime log: an append-only table of agents' log lines and the wake-up bus of its followers.

Infrastructure that channel, tool, runtime and agent write to; it imports no domain."""
