"""aibridge_asgi: mount an AI gateway inside any ASGI app.

>>> from aibridge_asgi import create_bridge, Actor
>>> bridge = create_bridge(lambda token: Actor("alice") if token == "t" else None,
...                        provider_keys={"anthropic": "sk-ant-..."})
"""

from __future__ import annotations

from .app import Bridge, ResolverFailed, TokenResolver, UpstreamChoice, create_bridge
from .breaker import CircuitBreakerConfig
from .config import ProviderConfig, RetryPolicy, Timeouts
from .hooks import BridgeHooks, Timings
from .keys import Key, KeyCooldowns
from .limits import Limits
from .pricing import GenaiPrices, Price, PriceBook, Rates
from .records import (
    Actor,
    Cost,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    PromptUsage,
    Record,
    Recorder,
    TokenUsage,
    ToolResult,
    ToolUsage,
)
from .upstream import (
    AiohttpUpstream,
    HttpxUpstream,
    Upstream,
    UpstreamRequestInvalid,
    UpstreamResponse,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AiohttpUpstream",
    "Bridge",
    "BridgeHooks",
    "CircuitBreakerConfig",
    "Cost",
    "GenaiPrices",
    "HttpxUpstream",
    "InterceptionEnded",
    "InterceptionStarted",
    "Key",
    "KeyCooldowns",
    "Limits",
    "ModelThought",
    "Price",
    "PriceBook",
    "PromptUsage",
    "ProviderConfig",
    "Rates",
    "Record",
    "Recorder",
    "ResolverFailed",
    "RetryPolicy",
    "Timeouts",
    "Timings",
    "TokenResolver",
    "TokenUsage",
    "ToolResult",
    "ToolUsage",
    "Upstream",
    "UpstreamChoice",
    "UpstreamRequestInvalid",
    "UpstreamResponse",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "__version__",
    "create_bridge",
]
