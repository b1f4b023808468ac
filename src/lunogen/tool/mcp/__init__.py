"""Remote MCP servers: per-agent Streamable HTTP connections whose allowed tools join a turn.

`models` (tables), `schemas` (API shapes), `service` (configuration, allowlists, credentials),
`client` (one guarded SDK session per call), `oauth` (the authorization-code flow the dashboard
and the API run), `connect` (request steps that talk to servers, committing first), `tools` (the
tools a turn offers), `endpoints` (HTTP). The export section is `privacy.export_mcp`; the
dashboard page `dashboard.mcp_pages`; user documentation `docs/mcp.md`.
"""
