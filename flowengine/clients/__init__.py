"""The original clients, as thin facades over shipped workflows: change the import, keep the code.

- :class:`MultiModelOrchestrator` (the critique client) runs ``workflows/critique.yaml``;
- :class:`MultiLLMOrchestrator` (the staged orchestrator) runs ``workflows/staged.yaml``;
- :class:`UIResponseManager` formats their results with flowengine's cards and comparison.

Each facade maps its arguments to the workflow's values and the run to the original's dict;
the workflow does the work. Growing out of a facade means editing a copy of its workflow.
"""

from __future__ import annotations

from flowengine.clients._workflows import ClientResult
from flowengine.clients.critique import MultiModelOrchestrator, SecureAPIKeyManager
from flowengine.clients.staged import MultiLLMOrchestrator
from flowengine.clients.ui import UIResponseManager

__all__ = [
    "ClientResult",
    "MultiLLMOrchestrator",
    "MultiModelOrchestrator",
    "SecureAPIKeyManager",
    "UIResponseManager",
]
