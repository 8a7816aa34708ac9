"""
Operator tools run beside a server, never inside it: C{kezchat-admin}
(C{admin}) and what it runs (C{backup}, C{migrate}, C{dbaudit}).
"""
