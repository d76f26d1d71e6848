"""MiniObserv: self-hosted metrics and logs for fleets of Linux hosts."""

__version__ = "0.1.0"
