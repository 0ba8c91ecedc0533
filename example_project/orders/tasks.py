"""The shop's background work, as pynenc tasks (imported by pynenc_django at startup).

    process_order(order_id)              the parent: waits for its children, running
      │                                  those still queued itself, inside its wait
      ├─ reserve_stock(line_id) × lines  fan-out, then waits for all of them (fan-in)
      ├─ quote_shipping(order_id)        the carrier may time out: retried
      ├─ charge_payment(customer_id, …)  one charge per customer at a time
      └─ emits "order.completed"  ──▶  send_receipt(order_id)   event trigger
    sales_report()                       cron trigger (settings.SHOP_SALES_REPORT_CRON)

Delivery is at least once (a worker killed mid-task means the task runs again), so every
task is idempotent: a second run finds its work done and returns the same result.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.trigger import TriggerBuilder
from pynenc.trigger.conditions import EventContext

from orders.models import Customer, Order, OrderLine, Payment, Product, SalesReport
from pynenc_django import app

ORDER_COMPLETED = "order.completed"  # event emitted by process_order

# Pretend latency of the warehouse, the carrier and the payment provider (seconds).
WAREHOUSE_LATENCY = 0.2
CARRIER_LATENCY = 0.2
PAYMENT_LATENCY = 0.4


class OutOfStock(Exception):
    """Not enough stock for an order line (not retried: a human has to look)."""


class CarrierTimeout(Exception):
    """The carrier's API did not answer in time: worth another try."""


@app.task
def process_order(order_id: int) -> dict[str, Any]:
    """Reserve every line in parallel, wait for all of them, then quote and charge."""
    Order.objects.filter(pk=order_id, status=Order.Status.NEW).update(
        status=Order.Status.PROCESSING
    )
    order = Order.objects.get(pk=order_id)
    line_ids = list(order.lines.order_by("pk").values_list("pk", flat=True))

    # Fan-out: one reserve_stock invocation per line, queued at once for the workers...
    reservations = reserve_stock.parallelize([(line_id,) for line_id in line_ids])
    # ...fan-in: blocks until every child has finished. Meanwhile pynenc records the
    # "process_order waits on reserve_stock" edges, so runners run the children first,
    # and this worker runs, inside the wait, those no other worker has taken yet.
    subtotal = sum((Decimal(amount) for amount in reservations.results), Decimal("0.00"))

    shipping = Decimal(quote_shipping(order_id).result)  # waits, through its retries
    total = subtotal + shipping
    reference = charge_payment(order.customer_id, order_id, str(total)).result

    Order.objects.filter(pk=order_id).exclude(status=Order.Status.COMPLETED).update(
        status=Order.Status.COMPLETED,
        completed_at=timezone.now(),
        subtotal=subtotal,
        shipping=shipping,
        total=total,
    )
    # Anyone may listen: send_receipt does (its trigger below).
    app.trigger.emit_event(ORDER_COMPLETED, {"order_id": order_id})
    return {
        "order_id": order_id,
        "lines_reserved": len(line_ids),
        "subtotal": str(subtotal),
        "shipping": str(shipping),
        "total": str(total),
        "payment": reference,
    }


@app.task
def reserve_stock(line_id: int) -> str:
    """Take the line's quantity out of stock (once); return the line's amount."""
    time.sleep(WAREHOUSE_LATENCY)
    with transaction.atomic():
        line = OrderLine.objects.select_for_update().get(pk=line_id)
        if line.reserved_at is None:
            taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
                stock=F("stock") - line.quantity
            )
            if not taken:
                raise OutOfStock(f"not enough {line.product} for order #{line.order_id}")
            line.reserved_at = timezone.now()
            line.save(update_fields=["reserved_at"])
    return str(line.amount)


@app.task(retry_for=(CarrierTimeout,), max_retries=3)
def quote_shipping(order_id: int) -> str:
    """Ask the order's carrier for a price. Slowpost times out on the first request of
    every order; pynenc retries the task (status RETRY) and the second request works."""
    Order.objects.filter(pk=order_id).update(quote_requests=F("quote_requests") + 1)
    order = Order.objects.get(pk=order_id)
    time.sleep(CARRIER_LATENCY)
    if order.carrier == Order.Carrier.SLOWPOST and order.quote_requests == 1:
        raise CarrierTimeout(f"Slowpost did not answer in time for order #{order_id}")
    items = order.lines.aggregate(n=Sum("quantity"))["n"] or 0
    base, per_item = (
        (Decimal("3.90"), Decimal("0.40"))
        if order.carrier == Order.Carrier.SLOWPOST
        else (Decimal("4.90"), Decimal("0.50"))
    )
    return str(base + per_item * items)


@app.task(
    # The payment provider refuses concurrent charges on one customer's card: at most
    # one charge_payment per customer_id runs at a time, cluster-wide. Another one that
    # a worker picks up meanwhile is set aside (CONCURRENCY_CONTROLLED) and re-queued.
    running_concurrency=ConcurrencyControlType.KEYS,
    key_arguments=("customer_id",),
    reroute_on_concurrency_control=True,
)
def charge_payment(customer_id: int, order_id: int, amount: str) -> str:
    """Charge the customer for the order (once); return the payment reference."""
    existing = Payment.objects.filter(order_id=order_id).first()
    if existing is not None:
        return existing.reference
    started_at = timezone.now()
    time.sleep(PAYMENT_LATENCY)
    payment = Payment.objects.create(
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        reference=f"PAY-{order_id:06d}",
        started_at=started_at,
        finished_at=timezone.now(),
    )
    return payment.reference


def receipt_arguments(context: EventContext) -> dict[str, Any]:
    """send_receipt's arguments from the event (module level: pynenc stores its name)."""
    return {"order_id": context.payload["order_id"]}


@app.task(
    triggers=TriggerBuilder().on_event(ORDER_COMPLETED).with_args_from_event(receipt_arguments)
)
def send_receipt(order_id: int) -> str:
    """Mail the receipt of a completed order, once (run by the "order.completed" event)."""
    sent_now = Order.objects.filter(pk=order_id, receipt_sent_at__isnull=True).update(
        receipt_sent_at=timezone.now()
    )
    if not sent_now:
        return f"receipt of order #{order_id} was already sent"
    order = Order.objects.select_related("customer").get(pk=order_id)
    lines = "\n".join(
        f"  {line.quantity} × {line.product.name:<20} {line.amount:>8}"
        for line in order.lines.select_related("product")
    )
    send_mail(
        subject=f"Your order #{order.pk}",
        message=(
            f"Hello {order.customer.name},\n\n{lines}\n"
            f"  {'shipping':<24} {order.shipping:>8}\n  {'total':<24} {order.total:>8}\n"
        ),
        from_email=None,
        recipient_list=[order.customer.email],
    )
    return f"receipt of order #{order_id} sent to {order.customer.email}"


@app.task(triggers=TriggerBuilder().on_cron(settings.SHOP_SALES_REPORT_CRON))
def sales_report() -> dict[str, Any]:
    """Sum up the completed orders (cron trigger: runs on its own, never called)."""
    totals = Order.objects.filter(status=Order.Status.COMPLETED).aggregate(
        orders=Count("pk"), revenue=Sum("total")
    )
    report = SalesReport.objects.create(
        orders_completed=totals["orders"], revenue=totals["revenue"] or Decimal("0.00")
    )
    return {
        "report": report.pk,
        "orders_completed": report.orders_completed,
        "revenue": str(report.revenue),
        "customers": Customer.objects.count(),
    }
