"""Every channel type and the channels' jobs and routes, imported for what they register: the
types with the contract's registry, the jobs and sweeps with the worker, the routes with
`channel.routes` (which the app mounts). Adding a channel type adds its import here."""

from __future__ import annotations

from lunogen.channel import (
    api,  # noqa: F401  type: api; routes: POST /api/v1/agents/{id}/messages
    delivery,  # noqa: F401  job: channel.deliver; sweep: channel_deliveries
    endpoints,  # noqa: F401  routes: the owner's side (enable, pairing codes, contacts)
    openai_compat,  # noqa: F401  type: openai; routes: /v1
    presence,  # noqa: F401  typing indicators and drafts around turns
    registration,  # noqa: F401  job: channel.unregister; sweep: channel_unregistrations
    telegram,  # noqa: F401  type: telegram
    webhook,  # noqa: F401  type: webhook
    whatsapp,  # noqa: F401  type: whatsapp
)
from lunogen.channel.webchat import endpoints as webchat  # noqa: F401  type: webchat; routes
