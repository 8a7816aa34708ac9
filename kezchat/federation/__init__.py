"""
Federation: servers of different domains answering for each other's
handles (lookups) and proving themselves to each other (server keys).
"""
