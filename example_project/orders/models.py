"""The shop: customers order products; orders are processed in the background (tasks.py)."""

from decimal import Decimal

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField(unique=True)

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"

    class Carrier(models.TextChoices):
        PARCELGO = "parcelgo", "Parcelgo"
        SLOWPOST = "slowpost", "Slowpost (times out on the first request)"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    carrier = models.CharField(max_length=16, choices=Carrier.choices, default=Carrier.PARCELGO)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    subtotal = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    shipping = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    total = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    quote_requests = models.PositiveIntegerField(
        default=0, help_text="How often the carrier was asked for a shipping quote."
    )
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    invocation_id = models.CharField(
        max_length=64, blank=True, help_text="pynenc invocation of process_order."
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Order #{self.pk}"

    def line_total(self) -> Decimal:
        return sum((line.amount for line in self.lines.all()), Decimal("0.00"))


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    reserved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.quantity} × {self.product.name}"

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


class Payment(models.Model):
    """One charge at the (fake) payment provider; started/finished show it never overlaps
    another charge of the same customer (``charge_payment``'s running concurrency)."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reference = models.CharField(max_length=32, unique=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.reference


class SalesReport(models.Model):
    """Written by the cron-triggered ``sales_report`` task."""

    created_at = models.DateTimeField(auto_now_add=True)
    orders_completed = models.PositiveIntegerField()
    revenue = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Sales report {self.created_at:%Y-%m-%d %H:%M:%S}"
