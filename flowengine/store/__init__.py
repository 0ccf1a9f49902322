"""Persistence: the SQLite database, the response cache, run records and price lists.

Internal: the public API is what :mod:`flowengine` exports.
"""
