"""The `mcp_servers` section of a data export: the owner's MCP server configurations and the
calls their agents made, never credentials. Importing this module registers the section."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.privacy.export_archive import Archive, ExportContext, register_section
from lunogen.tool.mcp import service
from lunogen.tool.mcp.models import McpToolCall


@register_section(
    "mcp_servers",
    files="mcp_servers.json",
    about="Your agents' remote MCP servers (URL, auth kind, listed and allowed tools; tokens "
    'appear only as `"credentials_configured"`) and every tool call your agents made to them '
    "(server, tool, duration, size, outcome).",
)
async def mcp_section(ctx: ExportContext, archive: Archive) -> None:
    async with ctx.reader() as session:
        servers = await service.export_servers(session, owner_id=ctx.user_id)
    query = select(McpToolCall).where(McpToolCall.owner_id == ctx.user_id)
    async with archive.stream("mcp_servers.json") as out:
        await out.write('{"servers": ')
        async with out.array() as items:
            for server in servers:
                await items.add(server)
        await out.write(', "calls": ')
        async with out.array() as items:
            async for calls in ctx.batches(query, [McpToolCall.created_at, McpToolCall.id]):
                for call in calls:
                    await items.add(
                        {
                            "agent_id": call.agent_id,
                            "server": call.server_name,
                            "tool": call.tool,
                            "duration_ms": call.duration_ms,
                            "result_chars": call.result_chars,
                            "outcome": call.outcome,
                            "error": call.error,
                            "at": call.created_at,
                        }
                    )
        await out.write("}")
