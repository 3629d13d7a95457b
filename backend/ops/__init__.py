"""Operator commands, run from backend/ with the service's environment:

* ``python -m ops.dlq_replay``: send dead-lettered jobs back to their queues, once each.
* ``python -m ops.smoke_check <base-url>``: check a deployment answers (health, readiness, API).
"""
