"""
The control point: the control messages (length-prefixed deterministic
CBOR), the signed Hello, CNOS session limits, the link state machine, and the
link protocol that runs one control point per link (the APPN CP-CP session
pair).

It dispatches BINDs and control messages to handlers its host registers; it
knows nothing of the services that register them.
"""
