"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright logs into a live test server and reads the BLOCKED atomic-service executions:
a sentence naming the run that held the slot and its runner by name, host and pid, each a
link that finds it.

Skipped with the reason when Playwright or Chromium is missing, except under CI
(``CI=true``), where a missing browser is a failure. The screenshot is written to
``.test-artifacts/admin-blocked-executions.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SCREENSHOT = (
    Path(__file__).resolve().parents[2] / ".test-artifacts" / "admin-blocked-executions.png"
)


@contextlib.contextmanager
def admin_page(chromium: str, url: str, user: Any, height: int = 900) -> Iterator[Any]:
    """A headless Chromium page logged in to the admin at ``url`` as ``user`` (password
    ``pw``, as ``make_user`` sets it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(f"{url}/admin/login/?next=/admin/")
            page.fill("#id_username", user.get_username())
            page.fill("#id_password", "pw")
            page.click("input[type=submit]")
            yield page
        finally:
            browser.close()


def chromium_or_skip() -> str:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[test]')"
    path = (
        os.environ.get("PYNENC_DJANGO_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if path is None:
        reason = reason or "Debian's chromium is not installed (apt-get install chromium)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    return str(path)


def test_blocked_executions_in_chromium(
    live_server: Any, seeded_app: str, make_user: Callable[..., Any]
) -> None:
    chromium = chromium_or_skip()
    from playwright.sync_api import expect

    from pynenc_django.models import RunnerHeartbeat

    user = make_user(superuser=True)
    # As ``pynenc_runner --name`` would store them, for each runner and its workers.
    for n in (0, 1):
        RunnerHeartbeat.objects.filter(
            app_id=seeded_app, runner_id__startswith=f"seed-runner-{n}"
        ).update(name=f"runner-{n + 1}")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with admin_page(chromium, live_server.url, user) as page:
        expect(page.locator("#pynenc-overview-link")).to_be_visible()

        page.goto(
            f"{live_server.url}/admin/pynenc_django/atomicserviceexecution/"
            f"?app_id={seeded_app}&status=blocked"
        )
        # The reason is a sentence naming the holder run and its runner, both links;
        # the stored text is the sentence's title.
        reason = page.locator("#result_list .pynenc-reason").first
        expect(reason).to_be_visible()
        expect(reason).to_contain_text(
            re.compile(
                r"^Blocked: run seed-run-\d+ of the atomic services was still running on "
                r"runner runner-[12] \(host-[01], pid 100[01]\) since \d\d:\d\d:\d\d\.$"
            )
        )
        expect(reason).to_have_attribute("title", re.compile(r"^prior_running:seed-run-"))
        holder = reason.get_attribute("title").split()[0].removeprefix("prior_running:")
        row_runner = page.locator("#result_list td.field-runner").first
        expect(row_runner).to_contain_text(re.compile(r"^runner-[12] \(host-[01], pid 100[01]\)$"))
        expect(page.locator("#pynenc-execution-summary")).to_contain_text("Blocked, last hour")
        expect(page.locator("#result_list")).not_to_contain_text("COMPLETED")
        page.screenshot(path=str(SCREENSHOT))

        # The run link finds the holder's row; the runner link, the runner by name.
        holder_runner = reason.locator("a.pynenc-runner").inner_text()
        reason.get_by_role("link", name=holder).click()
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        expect(page.locator("#result_list th.field-run_id")).to_have_text(holder)
        page.go_back()
        page.locator("#result_list .pynenc-reason").first.locator("a.pynenc-runner").click()
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        expect(page.locator("#result_list td.field-name")).to_have_text(holder_runner)
        page.go_back()

        # Two more pages a person would look at next, kept as screenshots too.
        page.click("text=pynenc overview")
        expect(page.locator("#pynenc-status-counts")).to_be_visible()
        page.screenshot(path=str(SCREENSHOT.with_name("admin-overview.png")), full_page=True)
        parent = f"{seeded_app[:20]}-inv-000000050"
        page.goto(
            f"{live_server.url}/admin/pynenc_django/invocation/?app_id={seeded_app}&q={parent}"
        )
        page.click(f"text={parent}")
        expect(page.locator("#pynenc-timeline")).to_contain_text("REGISTERED")
        page.screenshot(path=str(SCREENSHOT.with_name("admin-invocation.png")), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nscreenshot: {SCREENSHOT}")
