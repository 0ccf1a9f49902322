"""Batch runs: rows in, one result line per row out.

Internal: the public API is what :mod:`flowengine` exports.
"""
