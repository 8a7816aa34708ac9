"""
The HTTP edge: parse, call a domain object, render. No logic lives here.
"""
