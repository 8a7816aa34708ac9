"""
kezchat's tests: run with C{trial --reactor=asyncio tests}.
"""
