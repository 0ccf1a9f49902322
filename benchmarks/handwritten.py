"""The hand-written client both benchmarks compare against: one chat call the way a careful
asyncio + aiohttp programmer writes it (status checked, transient errors retried, the reply's
content and usage read), and the models and params both pipelines use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

# alias -> (model id, weight), as in workflows/full.yaml and benchmarks/workflow.yaml
MODELS = {
    "gpt-oss": ("openai/gpt-oss-120b", 3),
    "glm-4.5": ("z-ai/glm-4.5", 2),
    "qwen3": ("qwen/qwen3-235b-a22b-2507", 2),
    "kimi-k2": ("moonshotai/kimi-k2", 1),
    "deepseek": ("deepseek/deepseek-chat-v3.1", 1),
    "llama": ("meta-llama/llama-3.3-70b-instruct", 1),
}
BY_WEIGHT = sorted(MODELS, key=lambda alias: -MODELS[alias][1])
PARAMS = {"temperature": 0.7, "max_tokens": 1024}
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


async def chat(
    session: aiohttp.ClientSession,
    url: str,
    alias: str,
    content: str,
    params: Mapping[str, Any],
    *,
    timeout: aiohttp.ClientTimeout,
    headers: Mapping[str, str] | None = None,
    attempts: int = 3,
    backoff: float = 0.1,
) -> dict[str, Any]:
    """One model call; a failure after the last attempt comes back as success: False."""
    model_id = MODELS[alias][0]
    payload = {**params, "model": model_id, "messages": [{"role": "user", "content": content}]}
    started = time.perf_counter()
    error = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff * 2**attempt)
        try:
            async with session.post(url, json=payload, headers=headers, timeout=timeout) as reply:
                if reply.status != 200:
                    error = f"HTTP {reply.status}: {(await reply.text())[:200]}"
                    if reply.status in RETRYABLE:
                        continue
                    break
                body = await reply.json()
            message = body["choices"][0]["message"]["content"]
            if not message:
                error = "empty answer"
                continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            continue
        except (ValueError, LookupError, TypeError) as exc:
            error = f"malformed reply: {exc!r}"
            continue
        return {
            "model": alias,
            "model_id": model_id,
            "content": message,
            "success": True,
            "usage": body.get("usage") or {},
            "latency_s": time.perf_counter() - started,
            "attempts": attempt + 1,
        }
    return {"model": alias, "model_id": model_id, "success": False, "error": error}


async def select(
    session: aiohttp.ClientSession, url: str, prompt: str, timeout: aiohttp.ClientTimeout
) -> tuple[str, float | None]:
    """The selector's model, or the top-weight one if it is down or names an unknown model."""
    try:
        async with session.post(url, json={"prompt": prompt}, timeout=timeout) as reply:
            if reply.status != 200:
                return BY_WEIGHT[0], None
            body = await reply.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return BY_WEIGHT[0], None
    selected = body.get("selected_model")
    if selected not in MODELS:
        return BY_WEIGHT[0], None
    return selected, body.get("confidence_scores", {}).get(selected)
