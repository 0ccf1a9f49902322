"""The workflow language: reading files, checking them, templates, the DAG and the plan.

Internal: the public API is what :mod:`flowengine` exports. Imports only the bottom layer
(``errors``, ``spec``, ``results``, ``events``).
"""
