"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the tests that send email."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.smtp import FakeSmtp, fake_smtp


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with fake_smtp() as server:
        yield server
