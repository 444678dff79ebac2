"""An order pipeline on durableflow: run workers with the CLI, start runs from a client.

Workers (as many as you like, each its own process)::

    DURABLEFLOW_DATABASE_URL=postgresql://app@127.0.0.1/app \
        durableflow worker examples.orders:flow --migrate

Client (starts three orders and waits for them)::

    DURABLEFLOW_DATABASE_URL=postgresql://app@127.0.0.1/app python -m examples.orders

Kill a worker with ``kill -9`` mid-run and start another: the orders finish, and the
steps that had committed do not run again.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from durableflow import Flow, FlowContext, StepFailed

flow = Flow()  # settings from DURABLEFLOW_* variables; embedded Postgres when none


class Order(BaseModel):
    id: str
    items: dict[str, int]  # sku -> quantity


class Receipt(BaseModel):
    order_id: str
    total_cents: int
    charge_id: str | None


PRICES = {"apple": 50, "pear": 70, "melon": 300}


@flow.step()
async def price(ctx: FlowContext, order: Order) -> int:
    unknown = set(order.items) - set(PRICES)
    if unknown:
        raise ValueError(f"unknown items {sorted(unknown)}")
    return sum(PRICES[sku] * quantity for sku, quantity in order.items.items())


@flow.step(retries=5, backoff=1.0, timeout=30)
async def charge(ctx: FlowContext, order_id: str, cents: int) -> str:
    await asyncio.sleep(0.5)  # a payment API; pass ctx.idempotency_key so retries charge once
    return f"ch_{ctx.idempotency_key.replace(':', '_')}"


@flow.step()
async def ship(ctx: FlowContext, order: Order) -> None:
    await asyncio.sleep(0.5)


@flow.workflow(name="orders.fulfil", version=1)
async def fulfil(ctx: FlowContext, order: Order) -> Receipt:
    try:
        cents = await price(ctx, order)
    except StepFailed:
        return Receipt(order_id=order.id, total_cents=0, charge_id=None)
    charge_id = await charge(ctx, order.id, cents)
    await ship(ctx, order)
    return Receipt(order_id=order.id, total_cents=cents, charge_id=charge_id)


async def main() -> None:
    async with flow:
        await flow.migrate()
        orders = [
            Order(id="A-1", items={"apple": 3}),
            Order(id="A-2", items={"pear": 1, "melon": 1}),
            Order(id="A-3", items={"durian": 1}),
        ]
        run_ids = [
            await flow.start(fulfil, input=order, idempotency_key=f"order-{order.id}")
            for order in orders
        ]
        for run_id in run_ids:
            print(await flow.result(run_id, timeout=120))


if __name__ == "__main__":
    asyncio.run(main())
