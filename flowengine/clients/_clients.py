"""A Python client of the original orchestrator, as a provider for the plugin registry.

The registry already takes a callable given the messages (sync or async) and an object with
an async ``complete(request)`` (:mod:`flowengine.providers.registry`). The one difference is
failure: the original retried whatever a client raised, so a callable's exception becomes a
retryable :class:`CallError` here, and the engine's retries apply to it as to an HTTP error.

Caching: the original cached every client's answers. A client that is a function defined at
the top of a file is cached here too, under that file and its name, which are the same in
every process. A lambda, a nested function, a method or another object is not: nothing tells
it apart from another one in a later process, whose answers the cache would then give.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

from flowengine import CallError, UsageError


def as_provider(client: Any) -> Any:
    """What to register for ``client``: itself if it speaks the provider protocol, else the
    callable wrapped so that its failures are retried."""
    if callable(getattr(client, "complete", None)):
        return client  # a Provider raises CallError itself, retryable or not
    if not callable(client):
        raise UsageError(
            f"a {type(client).__name__} object is not a model client",
            "register an OpenRouter model id (a string), a callable given the chat messages "
            "that returns the text, or an object with an async complete(request)",
        )
    wrapped = _retried(client)
    wrapped.cache_id = cache_id(client)  # type: ignore[attr-defined]
    return wrapped


def cache_id(client: Any) -> str | None:
    """Where a client's answers are cached: ``python:FILE:NAME`` for a function defined at the
    top of a file; None (not cached) for anything else."""
    if not inspect.isfunction(client) or "<" in client.__qualname__:
        return None  # a lambda or a nested function: `<lambda>`, `<locals>` in its name
    file = client.__code__.co_filename
    if not os.path.isfile(file):
        return None  # typed at a prompt or passed to exec: `<stdin>`, `<string>`
    return f"python:{os.path.abspath(file)}:{client.__qualname__}"


def _retried(client: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``client`` raising retryable CallErrors; ``wraps`` keeps its signature, which tells
    the registry whether it wants the messages or the whole request."""
    if inspect.iscoroutinefunction(client) or inspect.iscoroutinefunction(
        getattr(client, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):

        @functools.wraps(client)
        async def call_async(argument: Any) -> Any:
            try:
                return await client(argument)
            except CallError:
                raise
            except Exception as exc:
                raise _failed(client, exc) from exc

        return call_async

    @functools.wraps(client)
    def call(argument: Any) -> Any:
        try:
            return client(argument)
        except CallError:
            raise
        except Exception as exc:
            raise _failed(client, exc) from exc

    return call


def _failed(client: Any, exc: Exception) -> CallError:
    name = getattr(client, "__qualname__", type(client).__name__)
    return CallError("client", f"{name} raised {type(exc).__name__}: {exc}", retryable=True)
