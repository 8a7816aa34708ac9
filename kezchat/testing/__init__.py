"""
Fixtures shared by the test suite and the benchmarks (as C{treq.testing}
is for treq's users): real nats-server and PostgreSQL processes
(C{natsserver}, C{pgsupport}), raw HTTP connections (C{rawhttp}) and the
one way to say a needed tool is missing (C{requirements}). C{tests/} and
C{bench/} import these, never each other's modules.
"""
