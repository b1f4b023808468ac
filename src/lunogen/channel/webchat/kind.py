"""The web chat as a channel type of the contract (`channel.contract`).

Visitors' messages arrive at the chat's own routes (`endpoints.py`), not at
`/hooks/webchat/<id>`, and the request that brought a message answers it (SSE): nothing to
verify, push or register with a provider. Visitors are anonymous, so no access policy applies:
the origin allowlist and the rate limits are the chat's gate.
"""

from __future__ import annotations

from lunogen.channel.contract import ChannelType, register_type
from lunogen.channel.schemas import WebchatChannel, WebchatChannelIn


class WebchatChannelType(ChannelType):
    name = "webchat"
    input_model = WebchatChannelIn
    output_model = WebchatChannel


WEBCHAT = register_type(WebchatChannelType())
