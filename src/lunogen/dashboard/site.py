"""Every dashboard module with pages, for the app to mount (a new page module adds its router
here)."""

from __future__ import annotations

from fastapi import APIRouter

from lunogen.dashboard import apidocs, conversations, home, pages, skills_pages


def routers() -> list[APIRouter]:
    return [home.router, conversations.router, skills_pages.router, apidocs.router, pages.router]
