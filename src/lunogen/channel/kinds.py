"""Every channel type and the channels' jobs, imported for what they register: the types with
the contract's registry, the jobs and sweeps with the worker. Adding a channel type adds its
import here."""

from __future__ import annotations

from lunogen.channel import (
    api,  # noqa: F401  type: api
    delivery,  # noqa: F401  job: channel.deliver; sweep: channel_deliveries
    openai_compat,  # noqa: F401  type: openai
    presence,  # noqa: F401  typing indicators and drafts around turns
    registration,  # noqa: F401  job: channel.unregister; sweep: channel_unregistrations
    telegram,  # noqa: F401  type: telegram
    webhook,  # noqa: F401  type: webhook
    whatsapp,  # noqa: F401  type: whatsapp
)
from lunogen.channel.webchat import kind as webchat  # noqa: F401  type: webchat
