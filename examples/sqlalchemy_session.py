"""Enqueue on a SQLAlchemy ORM Session: the order object and its task share one transaction.

    python examples/sqlalchemy_session.py

Uses PGTASQ_DSN when it is set; otherwise starts the embedded PostgreSQL
(pip install 'pgtasq[embedded]') with its data in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import BigInteger, Identity, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgtasq
from pgtasq.tables import tasks_table


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
    __tablename__ = "example_sa_orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer: Mapped[str]
    total_cents: Mapped[int]


def main() -> None:
    dsn = database_url()
    # SQLAlchemy wants the driver in the URL: postgresql+psycopg://...
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    pgtasq.migrate(engine)
    Base.metadata.create_all(engine)
    producer = pgtasq.Producer()
    tasks = tasks_table()  # pgtasq.tasks as a SQLAlchemy Table, for reading it back

    def committed(order_id: int, task_id: int) -> tuple[bool, bool]:
        """What a fresh session sees: does the order exist, does the task exist?"""
        with Session(engine) as fresh:
            order = fresh.get(Order, order_id)
            n = fresh.scalar(select(func.count()).select_from(tasks).where(tasks.c.id == task_id))
            return order is not None, n == 1

    # 1. Add an order, flush to get its id, enqueue on the same session, commit.
    with Session(engine) as session:
        order = Order(customer="ada", total_cents=4200)
        session.add(order)
        session.flush()  # INSERT now, so order.id is known; still uncommitted
        task = producer.enqueue("orders.send_confirmation", {"order_id": order.id}, conn=session)
        print(f"in the session: order #{order.id}, task #{task.id} ({task.status})")
        assert committed(order.id, task.id) == (False, False)
        print("  a fresh session sees neither yet")
        session.commit()
        order_id = order.id
    assert committed(order_id, task.id) == (True, True)
    print(f"after session.commit(): order #{order_id} and task #{task.id} both exist")

    # 2. The same, rolled back.
    with Session(engine) as session:
        order = Order(customer="bob", total_cents=100)
        session.add(order)
        session.flush()
        lost_order = order.id
        lost_task = producer.enqueue(
            "orders.send_confirmation", {"order_id": lost_order}, conn=session
        )
        print(f"in the second session: order #{lost_order}, task #{lost_task.id}")
        session.rollback()
    assert committed(lost_order, lost_task.id) == (False, False)
    print(f"after session.rollback(): neither order #{lost_order} nor task #{lost_task.id} exists")

    engine.dispose()
    print("OK")


if __name__ == "__main__":
    main()
