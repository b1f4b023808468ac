"""Re-encrypt every stored secret under the key ring's primary key."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from lunogen.kit.crypto import KeyRing

BATCH = 200


async def count_encrypted(
    sessionmaker: async_sessionmaker[AsyncSession],
    columns: list[InstrumentedAttribute[str | None]],
) -> int:
    total = 0
    async with sessionmaker() as session:
        for column in columns:
            query = select(func.count()).where(column.is_not(None))
            total += int((await session.execute(query)).scalar_one())
    return total


async def reencrypt_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    columns: list[InstrumentedAttribute[str | None]],
    progress: Callable[[int], None] = lambda _n: None,
) -> int:
    """Re-encrypt in batches, one transaction per batch; safe to run again after a crash."""
    changed = 0
    for column in columns:
        table = column.class_
        pk = table.id
        last_id = ""
        while True:
            async with sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(pk, column)
                        .where(column.is_not(None), pk > last_id)
                        .order_by(pk)
                        .limit(BATCH)
                    )
                ).all()
                if not rows:
                    break
                for row_id, token in rows:
                    if keyring.needs_rotation(token):
                        await session.execute(
                            update(table)
                            .where(pk == row_id)
                            .values({column.key: keyring.reencrypt(token)})
                        )
                        changed += 1
                await session.commit()
                last_id = rows[-1][0]
                progress(len(rows))
    return changed
