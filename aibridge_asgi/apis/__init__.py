"""One module per bridged API: what to read from the request, and sans-IO
observers of the upstream response (streamed or not) that produce records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .anthropic_messages import MessagesInterception
from .base import ApiInterception
from .gemini import GenerateContentInterception, StreamGenerateContentInterception
from .openai_chat import ChatCompletionsInterception
from .openai_responses import ResponsesInterception

__all__ = [
    "ApiInterception",
    "ChatCompletionsInterception",
    "GenerateContentInterception",
    "MessagesInterception",
    "ResponsesInterception",
    "StreamGenerateContentInterception",
    "interception_for",
]

_BY_ROUTE: dict[str, type[ApiInterception]] = {
    cls.route: cls
    for cls in (
        MessagesInterception,
        ChatCompletionsInterception,
        ResponsesInterception,
        GenerateContentInterception,
        StreamGenerateContentInterception,
    )
}


def interception_for(
    route: str,
    interception_id: str,
    body: Mapping[str, Any],
    tool_result_content: int | None = None,
    model: str | None = None,
) -> ApiInterception:
    """Create the interception object for a bridged ``route``
    (``tool_result_content``: see :class:`~aibridge_asgi.records.ToolResult`;
    ``model``: the model named in the path, for APIs that put it there)."""
    return _BY_ROUTE[route](interception_id, body, tool_result_content, model)
