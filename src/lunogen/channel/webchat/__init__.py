"""The embeddable web chat: a public chat page per channel, a widget script that frames it on
the owner's sites, and the visitor protocol behind it (origin allowlist, short-lived visitor
tokens, replies streamed as server-sent events)."""
