"""Running workflows: the engine, the scheduler, the one call path, resilience and node kinds.

Internal: the public API is what :mod:`flowengine` exports.
"""
