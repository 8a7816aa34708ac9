"""
Client-side protocol pieces shared by the CLI and the tests.
"""
