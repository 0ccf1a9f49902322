"""Chat completion providers, the model-selector client, and the registry of provider types."""

from __future__ import annotations

from flowengine.providers.base import ChatRequest, Completion, Provider, ProviderContext
from flowengine.providers.offline import Offline
from flowengine.providers.openai import OpenAICompatible
from flowengine.providers.registry import create_provider, provider_types, register_provider
from flowengine.providers.selector import call_selector

__all__ = [
    "ChatRequest",
    "Completion",
    "Offline",
    "OpenAICompatible",
    "Provider",
    "ProviderContext",
    "call_selector",
    "create_provider",
    "provider_types",
    "register_provider",
]

# The built-in types (openai, offline) are found as a plugin's are: flowengine.plugins.BUILTIN
# and pyproject.toml's entry points name them.
