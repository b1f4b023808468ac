"""The OpenAI-compatible endpoint: `POST /v1/chat/completions` and `GET /v1/models` (issue 12 §5).

`endpoints` holds the routes and the channel's one way in (`accept_message`); `schemas` the wire
format; `agents` how a model name finds an agent; `replies` how a turn is followed; `errors`
OpenAI's error shape.
"""

from lunogen.channel.openai_compat.endpoints import router

__all__ = ["router"]
