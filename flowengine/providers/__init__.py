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

# The built-ins go through the same door as a plugin.
register_provider("openai", OpenAICompatible.from_spec)
register_provider("offline", Offline.from_spec)
