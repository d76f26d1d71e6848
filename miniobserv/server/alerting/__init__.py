"""Alerting: rules evaluated by one process at a time, events delivered through an outbox.

``state`` holds the pure state machine, ``evaluate`` one evaluation cycle, ``notify`` the
delivery of queued events, ``service`` the background threads started by ``create_app``.
"""
