"""
The message relay: request authentication, the relay itself, the broker
and the SSE streams (SPEC §3.2, §3.3).
"""
