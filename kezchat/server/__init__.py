"""
Composition: the chat-server's options (C{config}), the table they are
built from (C{options}), its service built whole from them (C{service}),
its listeners (C{listening}), and what twistd loads (C{tap}, C{gctuning},
C{logs}).

Nothing is imported here: twistd loads C{kezchat.server.config} to print
C{--help} before any reactor is chosen, and importing this package must
not install one.
"""
