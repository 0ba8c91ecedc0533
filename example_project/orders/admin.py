from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orders.models import Customer, Order, OrderLine, Payment, Product, SalesReport


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "stock"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 1
    readonly_fields = ["reserved_at"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "customer",
        "status",
        "carrier",
        "total",
        "quote_requests",
        "receipt_sent_at",
        "created_at",
    ]
    list_filter = ["status", "carrier"]
    readonly_fields = [
        "status",
        "completed_at",
        "subtotal",
        "shipping",
        "total",
        "quote_requests",
        "receipt_sent_at",
        "invocation_id",
    ]
    inlines = [OrderLineInline]
    actions = ["process"]

    @admin.action(description="Process the selected new orders in the background")
    def process(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        from orders.tasks import process_order

        new = list(queryset.filter(status=Order.Status.NEW))
        for order in new:
            invocation = process_order(order.pk)
            Order.objects.filter(pk=order.pk).update(invocation_id=invocation.invocation_id)
        self.message_user(
            request,
            f"Queued {len(new)} order(s) for processing (skipped {queryset.count() - len(new)} "
            "not new). The runners must be running: make serve starts them.",
            messages.SUCCESS,
        )


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["reference", "order", "customer", "amount", "started_at", "finished_at"]


@admin.register(SalesReport)
class SalesReportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "orders_completed", "revenue"]
