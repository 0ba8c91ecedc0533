"""The tasks of ``pynenc_seed``'s rows (``seed.tasks.*``), so the admin can resolve them.

On an app of their own, so the project's app registers no tasks it does not have.
"""

from pynenc import Pynenc

app = Pynenc(config_values={"app_id": "seed"})


@app.task
def send_email(to: str = "") -> None:
    """Never run by the tests: the admin only checks that it resolves."""


@app.task
def resize_image(path: str = "") -> None:
    """Never run by the tests."""


@app.task
def charge_card(order: int = 0) -> None:
    """Never run by the tests."""


@app.task
def sync_inventory() -> None:
    """Never run by the tests."""


@app.task
def build_report() -> None:
    """Never run by the tests."""


@app.task
def fan_out(n: int = 0) -> None:
    """Never run by the tests."""


@app.task
def cleanup() -> None:
    """Never run by the tests."""


@app.task
def notify(user: int = 0) -> None:
    """Never run by the tests."""
