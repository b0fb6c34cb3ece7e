"""The operator dashboard in headless Chromium, over rollouts the real flow made.

A release is merged on the fake GitHub, the real workers roll it out into the fake cluster and
pause it; the dashboard (the production app from bot.wsgi, served over HTTP) must list it, show
its steps, history and chart, and follow a `/promote` made on the PR without being reloaded.
The last test draws docs/dashboard.png from a fixed rollout at a fixed time, so the picture in
the README only changes when the page does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from bot import services
from bot.config import load_settings
from bot.dashboard import pages
from bot.dashboard.pages import CSP
from bot.dashboard.session import COOKIE
from bot.queue import RQJobQueue
from bot.rollout.model import PauseStep, SetWeightStep, Start
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from bot.wsgi import app_for
from tests.e2e import world as w
from tests.e2e.test_canary import MANUAL_STEPS, first_deploy
from tests.harness.browser import chromium, serving
from tests.unit.test_dashboard_views import context
from tests.unit.test_report_rollout import T0, Rollout, analysis, spec

pytestmark = pytest.mark.e2e

TOKEN = "e2e-dashboard-token-0123456789"
HOSTILE_TITLE = ('Web 2.0 <img src=x onerror="document.title=\'pwned\'">'
                 '<script>document.title="pwned"</script> & more')
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
WAIT_MS = 90_000  # the real workers promote and complete within this


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def served(world: w.World, **settings) -> Flask:
    """The production app (bot.wsgi) over the world's Redis, with these settings changed."""
    changed = dataclasses.replace(world.bot.settings, public_url="http://127.0.0.1", **settings)
    redis = world.bot.redis
    return app_for(services.Services(changed, redis, RQJobQueue(redis)))


@pytest.fixture
def dashboard(github_world: w.World) -> Iterator[str]:
    with serving(served(github_world, dashboard_token=TOKEN)) as base:
        yield base


def sign_in(page: Page, base: str, token: str = TOKEN) -> None:
    page.goto(base + "/dashboard/")
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_without_a_token_the_dashboard_is_not_found(github_world, page):
    with serving(served(github_world, dashboard_token=None)) as base:
        for path in ("/dashboard/", "/dashboard/login"):
            answer = page.goto(base + path)
            assert answer is not None and answer.status == 404
            expect(page.locator("body")).to_contain_text("the dashboard is off")


def test_login_is_required_and_a_wrong_token_is_refused(dashboard, page):
    answer = page.goto(dashboard + "/dashboard/")
    assert answer is not None and page.url == dashboard + "/dashboard/login"
    assert answer.headers["content-security-policy"] == CSP
    expect(page.locator("h1")).to_have_text("Sign in to the dashboard")

    sign_in(page, dashboard, token=TOKEN[:-1] + "x")
    expect(page.locator(".error")).to_contain_text("not the dashboard's token")
    assert page.context.cookies() == []
    page.goto(dashboard + "/dashboard/")
    assert page.url == dashboard + "/dashboard/login"

    sign_in(page, dashboard)
    expect(page.locator("h1")).to_have_text("Rollouts")
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (COOKIE, True, "Strict")
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in to the dashboard")
    page.goto(dashboard + "/dashboard/")
    assert page.url == dashboard + "/dashboard/login"


def test_a_real_rollout_is_listed_shown_and_followed_live(github_world, fake_kube, dashboard,
                                                          page):
    world = github_world
    first_deploy(world, MANUAL_STEPS)
    number, _ = w.release(world, "registry.example/web:2.0", HOSTILE_TITLE)
    w.wait_comment(world, number, "**Paused**")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)

    sign_in(page, dashboard)
    row = page.locator("tr[data-app=web]")
    expect(row).to_contain_text("Paused")
    expect(row.locator(".step")).to_contain_text("2/2")
    expect(row.locator(".weight")).to_have_text("50%")
    pr_url = f"{world.github.url}/{w.REPO}/pull/{number}"  # the fake forge's html_url
    expect(row.locator(".pr")).to_have_attribute("href", pr_url)
    # The hostile title is shown as the text it is: no element, no script, no handler ran.
    expect(row.locator(".title")).to_have_text(HOSTILE_TITLE)
    assert page.locator("main img, main script").count() == 0
    assert page.title() == "Rollouts · Coalmine"

    row.locator("a", has_text="web").click()
    expect(page.locator("h1")).to_contain_text("web")
    expect(page.locator("#phase")).to_have_text("Paused")
    expect(page.locator("#weight")).to_have_text("50%")
    expect(page.locator("table.steps tbody tr")).to_have_text(
        ["1setWeight 50done", "2pause (until /promote)paused"])
    expect(page.locator("table.history")).to_contain_text("started")
    expect(page.locator("figure.chart figcaption").first).to_have_text("Canary weight (%)")
    assert len(page.locator("figure.chart polyline").first.get_attribute("points").split()) >= 4
    expect(page.locator(".pr-line .title")).to_have_text(HOSTILE_TITLE)
    expect(page.locator(".pr-line .pr")).to_have_attribute("href", pr_url)
    expect(page.locator(".next")).to_contain_text("/promote web")

    # Promoted on the PR; the open page follows without a reload (the marker survives).
    page.evaluate("window.notReloaded = true")
    w.allow(world, "alice", "write")
    w.command(world, number, "/promote", "alice")
    expect(page.locator("#phase")).to_have_text("Promoted", timeout=WAIT_MS)
    expect(page.locator("#weight")).to_have_text("100%")
    expect(page.locator("table.history")).to_contain_text("alice")
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#live-status")).to_have_text("live")
    assert dialogs == [] and page.title() != "pwned"
    assert refused == []  # the page itself needs nothing the policy forbids


def test_the_screenshot_in_the_docs_is_drawn_from_a_fixed_rollout(redis_client, browser):
    """docs/dashboard.png: a paused canary after a passed analysis, at a fixed time."""
    metric = spec(count=3, interval=30.0, failure_condition="result[0] < 0.90")
    rollout = Rollout([SetWeightStep(20), analysis(), SetWeightStep(50), PauseStep()], metric)
    rollout.send(Start()).healthy(4)
    for value in ("0.991", "0.987", "0.996"):
        rollout.wait(30).answer("Successful", value)
    rollout.healthy(6)
    assert (rollout.state.phase, rollout.state.weight) == ("Paused", 50)
    key = rollout_key("github", "acme/gitops", "web")
    record = RolloutRecord(rollout.state, context(title="Checkout: faster cart totals"))
    RolloutStore(redis_client).save(key, record, None)

    app = Flask("coalmine")
    settings = load_settings({"COALMINE_DASHBOARD_TOKEN": TOKEN})
    pages.register(app, settings, redis_client, clock=lambda: T0 + 300)
    with serving(app) as base:
        browser_context = browser.new_context(viewport={"width": 1100, "height": 800})
        try:
            page = browser_context.new_page()
            sign_in(page, base)
            page.goto(base + "/dashboard/rollouts/github/acme/gitops/apps/web")
            expect(page.locator("#phase")).to_have_text("Paused")
            shot = page.screenshot(full_page=True)
            assert page.screenshot(full_page=True) == shot  # nothing moves on the page
        finally:
            browser_context.close()
    SCREENSHOT.write_bytes(shot)
