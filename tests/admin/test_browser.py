"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright logs into a live test server and reads the BLOCKED atomic-service executions.

Skipped with the reason when Playwright or Chromium is missing, except under CI
(``CI=true``), where a missing browser is a failure. The screenshot is written to
``.test-artifacts/admin-blocked-executions.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SCREENSHOT = (
    Path(__file__).resolve().parents[2] / ".test-artifacts" / "admin-blocked-executions.png"
)


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
    from playwright.sync_api import expect, sync_playwright

    user = make_user(superuser=True)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", user.get_username())
            page.fill("#id_password", "pw")
            page.click("input[type=submit]")
            expect(page.locator("#pynenc-overview-link")).to_be_visible()

            page.goto(
                f"{live_server.url}/admin/pynenc_django/atomicserviceexecution/"
                f"?app_id={seeded_app}&status=blocked"
            )
            reason = page.locator("#result_list .pynenc-reason").first
            expect(reason).to_be_visible()
            expect(reason).to_contain_text("prior_running:seed-run-")
            expect(page.locator("#pynenc-execution-summary")).to_contain_text("Blocked, last hour")
            expect(page.locator("#result_list")).not_to_contain_text("COMPLETED")
            page.screenshot(path=str(SCREENSHOT))

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
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nscreenshot: {SCREENSHOT}")
