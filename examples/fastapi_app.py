"""FastAPI: enqueue inside the request's transaction; a worker in the app's lifespan; a status
endpoint that waits for the task's result.

    python examples/fastapi_app.py            # runs the app through its test client, prints OK
    uvicorn --factory examples.fastapi_app:create_app    # serves it (pip install uvicorn)

Each request gets an async SQLAlchemy session with a transaction (`get_session`): the order
row and its task are written in it, and commit together when the endpoint returns, or roll
back together when it raises. The worker (`build_consumer`) runs in the app's lifespan, on
the app's event loop; in production run it as a process of its own instead
(``pgtasq worker yourapp.tasks:consumer``) and create the app with ``worker=False``.
Uses PGTASQ_DSN when it is set; otherwise the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import BigInteger, Identity, String, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgtasq

STOCK = 10  # more than this in one order: 409, and the transaction rolls back
STATUS_WAIT_MAX = 30.0  # seconds GET /tasks/{id}?wait= may wait for a result
STATUS_POLL_INTERVAL = 0.05


def database_url() -> str:
    """PGTASQ_DSN if set; otherwise the embedded server's DSN (started on first use)."""
    dsn = os.environ.get("PGTASQ_DSN")
    if dsn:
        return dsn
    from pgtasq import _embedded

    return _embedded.dsn(Path(tempfile.gettempdir()) / "pgtasq-examples")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "example_fastapi_orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(String, default="new")


class OrderIn(BaseModel):
    item: str
    quantity: int = 1


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request: committed when the endpoint returns,
    rolled back when it raises (FastAPI hands the exception to this dependency)."""
    async with request.app.state.sessions() as session, session.begin():
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def async_engine(dsn: str) -> AsyncEngine:
    """An async SQLAlchemy engine on psycopg 3 for any libpq DSN (URL or key=value)."""
    return create_async_engine(
        "postgresql+psycopg://", async_creator=lambda: psycopg.AsyncConnection.connect(dsn)
    )


def build_consumer(
    dsn: str, schema: str = pgtasq.SCHEMA_DEFAULT, engine: AsyncEngine | None = None
) -> pgtasq.Consumer:
    """The worker's handlers, writing through ``engine`` (default: one of their own).

    ``order.confirm`` updates the order and completes its task in one transaction
    (`TaskContext.acomplete`): the order is confirmed if and only if the task completes.
    """
    consumer = pgtasq.Consumer(dsn, schema=schema)
    engine = engine or async_engine(dsn)

    @consumer.task("order.confirm")
    async def confirm(ctx: pgtasq.TaskContext) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                update(Order).where(Order.id == ctx.payload["order_id"]).values(status="confirmed")
            )
            await ctx.acomplete(conn, {"order_id": ctx.payload["order_id"], "confirmed": True})

    return consumer


def create_app(
    dsn: str | None = None, *, schema: str = pgtasq.SCHEMA_DEFAULT, worker: bool = True
) -> FastAPI:
    """The app. ``worker``: run the pgtasq worker in the lifespan (else run one elsewhere;
    ``app.state.consumer`` is the one it would run)."""
    dsn = dsn or database_url()
    engine = async_engine(dsn)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    producer = pgtasq.AsyncProducer(schema=schema)  # conn= on every call: no pool of its own
    client = pgtasq.AsyncClient(dsn, schema=schema)
    consumer = build_consumer(dsn, schema, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(pgtasq.migrate, dsn, schema=schema)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        running = asyncio.create_task(consumer.arun(), name="pgtasq-worker") if worker else None
        try:
            yield
        finally:
            if running is not None:
                consumer.stop()
                await running
            await client.close()
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.state.consumer = consumer
    app.state.sessions = sessions

    @app.post("/orders", status_code=201)
    async def place_order(order_in: OrderIn, session: Session) -> dict[str, Any]:
        order = Order(item=order_in.item, quantity=order_in.quantity)
        session.add(order)
        await session.flush()  # the order's id, still inside the transaction
        info = await producer.enqueue("order.confirm", {"order_id": order.id}, conn=session)
        if order_in.quantity > STOCK:
            # Raised after the enqueue: the order and its task roll back together.
            raise HTTPException(409, f"only {STOCK} in stock")
        return {"order_id": order.id, "task_id": info.id}

    @app.get("/tasks/{task_id}")
    async def task_status(task_id: int, wait: float = 0.0) -> dict[str, Any]:
        """The task's status and result; with ``wait``, up to that many seconds for it to
        finish (polling the Client)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait, 0.0), STATUS_WAIT_MAX)
        while True:
            try:
                info = await client.get_task(task_id)
            except pgtasq.TaskNotFound:
                raise HTTPException(404, f"no task {task_id}") from None
            if info.status.is_final or loop.time() >= deadline:
                return {"id": info.id, "status": info.status.value, "result": info.result}
            await asyncio.sleep(STATUS_POLL_INTERVAL)

    return app


def main() -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as http:
        placed = http.post("/orders", json={"item": "book", "quantity": 2})
        assert placed.status_code == 201, placed.text
        task_id = placed.json()["task_id"]
        print("placed:", placed.json())
        status = http.get(f"/tasks/{task_id}", params={"wait": 20}).json()
        print("status:", status)
        assert status["status"] == "completed" and status["result"]["confirmed"] is True

        refused = http.post("/orders", json={"item": "piano", "quantity": 99})
        assert refused.status_code == 409
        print("refused:", refused.json(), "- the order and its task rolled back")
    print("OK")


if __name__ == "__main__":
    main()
