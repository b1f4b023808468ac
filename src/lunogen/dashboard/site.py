"""Every dashboard module with pages, for the app to mount (a new page module adds its router
here)."""

from __future__ import annotations

from fastapi import APIRouter

from lunogen.dashboard import (
    account_pages,
    admin_pages,
    agent_file_pages,
    agent_versions,
    agents,
    apidocs,
    approval_pages,
    billing_pages,
    caps_pages,
    channels,
    conversations,
    export_pages,
    home,
    key_pages,
    logs,
    mcp_pages,
    moderation_pages,
    pages,
    picture,
    playground,
    policy_pages,
    schedule_pages,
    skills_pages,
    support_pages,
    ticket_pages,
    usage_pages,
)


def routers() -> list[APIRouter]:
    return [
        home.router,
        apidocs.router,
        pages.router,
        playground.router,
        logs.router,
        agent_file_pages.router,  # before agents: /agents/import is not an agent id
        moderation_pages.router,  # the appeal page of an agent, /agents/{id}/appeal
        agents.router,
        agent_versions.router,
        channels.router,
        conversations.router,
        approval_pages.router,
        skills_pages.router,
        caps_pages.router,
        schedule_pages.router,
        mcp_pages.router,
        usage_pages.router,
        billing_pages.router,
        key_pages.router,
        account_pages.router,
        export_pages.router,
        picture.router,
        admin_pages.router,
        policy_pages.router,
        ticket_pages.router,
        support_pages.router,
    ]
