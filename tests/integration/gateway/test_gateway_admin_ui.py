"""Hospital IT's screens in headless Chromium against a real gateway: each screen's main action
(create a user who must then set their own password, a role change, disable; an API token
shown once, then revoked; the audit log filtered and exported; a destination edited and
disabled; a worklist server deleted), the viewer's read-only pages, and the API docs working
with every request outside the gateway blocked and no CSP violation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    Destination,
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    Reply,
    WorklistServer,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
)
from cinebridge_testkit.browser import VIEWPORT, chromium, log_in
from playwright.async_api import Dialog, Page, Route, expect

from .conftest import RunningGateway
from .test_gateway_ui import shot

pytestmark = pytest.mark.integration


class SettingsPeers:
    """The sender's destinations and the worklist service's servers, kept in memory."""

    def __init__(self) -> None:
        self.destinations = {
            str(uuid.UUID(int=7)): Destination(
                id=str(uuid.UUID(int=7)), name="PACS", ae_title="PACS", host="10.0.0.7", port=104
            )
        }
        self.servers = {
            "ris": WorklistServer(id="ris", name="RIS", host="ris", port=1, called_ae="R")
        }

    async def start(self, bus: Bus) -> None:
        async def list_dest(_: DestinationListRequest) -> Reply:
            return DestinationListReply(destinations=list(self.destinations.values()))

        async def upsert(msg: DestinationUpsert) -> Reply:
            dest = msg.destination.model_copy(update={"id": msg.destination.id or "new"})
            self.destinations[str(dest.id)] = dest
            return DestinationReply(destination=dest)

        async def servers(_: WorklistServersList) -> Reply:
            return WorklistServersReply(servers=list(self.servers.values()))

        async def delete(msg: WorklistServerDelete) -> Reply:
            self.servers.pop(msg.server_id)
            return WorklistServersReply(servers=list(self.servers.values()))

        await bus.serve(DestinationListRequest, list_dest)
        await bus.serve(DestinationUpsert, upsert)
        await bus.serve(WorklistServersList, servers)
        await bus.serve(WorklistServerDelete, delete)
        await bus.nc.flush()


async def test_admin_screens_in_the_browser(gateway_factory: Any, peer_bus: Bus) -> None:
    gw = await gateway_factory()
    peers = SettingsPeers()
    await peers.start(peer_bus)
    try:
        async with chromium() as browser:
            page = await browser.new_page(viewport=VIEWPORT)
            prompts: list[str] = []

            async def answer(dialog: Dialog) -> None:
                prompts.append(dialog.message)
                await dialog.accept("Reset-Pass-9" if dialog.type == "prompt" else None)

            page.on("dialog", answer)
            await log_in(page, gw.url)
            await users_screen(page, gw)
            await tokens_screen(page, gw)
            await audit_screen(page)
            await settings_screen(page, peers)
            await viewer_pages(browser, gw)
            await api_docs_offline(browser, gw)
    finally:
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)


async def users_screen(page: Page, gw: RunningGateway) -> None:
    await page.click("#nav-admin")
    await expect(page.locator("#users")).to_contain_text("admin")
    await page.fill("#user-form input[name=username]", "nurse")
    await page.fill("#user-form input[name=password]", "First-Pass-1")
    await page.select_option("#user-form select[name=role]", "operator")
    await page.click("#user-form button")
    row = page.locator("#users tr[data-user=nurse]")
    await expect(row).to_contain_text("password to change")
    # Found by its name, as a screen reader announces it (the row's select had none).
    await page.get_by_role("combobox", name="role of nurse").select_option("viewer")
    await expect(page.locator("#toast")).to_contain_text("nurse is now viewer")
    await page.locator("#users tr[data-user=nurse] [data-action=toggle]").click()
    await expect(page.locator("#users tr[data-user=nurse]")).to_contain_text("disabled")
    await shot(page, "admin-users")
    row = await gw.ctx.pool.fetchrow(
        "SELECT role, disabled, must_change_password FROM gateway_users WHERE username = 'nurse'"
    )
    assert dict(row) == {"role": "viewer", "disabled": True, "must_change_password": True}
    await page.locator("#users tr[data-user=nurse] [data-action=toggle]").click()
    await expect(page.locator("#users tr[data-user=nurse] [data-action=toggle]")).to_have_text(
        "Disable"
    )
    # Reset password (the prompt is answered "Reset-Pass-9"): one-time, and it logs in.
    await page.locator("#users tr[data-user=nurse] [data-action=reset]").click()
    await expect(page.locator("#toast")).to_contain_text("Password of nurse reset")
    nurse = gw.client()
    try:
        login = {"username": "nurse", "password": "Reset-Pass-9"}
        me = await nurse.post("/api/v1/auth/login", json=login)
        assert me.status_code == 200, me.text
        assert me.json()["must_change_password"] is True
    finally:
        await nurse.aclose()


async def tokens_screen(page: Page, gw: RunningGateway) -> None:
    await page.click("#tab-tokens")
    await page.fill("#token-form input[name=name]", "wallboard")
    await page.select_option("#token-form select[name=role]", "viewer")
    await page.fill("#token-form input[name=expires_in_days]", "7")
    await page.click("#token-form button")
    token = (await page.locator("#token-value").text_content() or "").strip()
    assert token.startswith("cbt_")
    await expect(page.locator("#tokens")).to_contain_text("wallboard")
    await shot(page, "admin-tokens")
    async with gw.client(headers={"Authorization": f"Bearer {token}"}) as wall:
        assert (await wall.get("/api/v1/auth/me")).json()["role"] == "viewer"
        await page.reload()
        await expect(page.locator("#token-value")).to_have_count(0)  # shown once
        await page.locator("#tokens tr", has_text="wallboard").locator("button").click()
        await expect(page.locator("#tokens tr", has_text="wallboard")).to_contain_text("revoked")
        await asyncio.sleep(gw.settings.gateway_auth_cache_s + 0.5)  # the auth cache TTL
        assert (await wall.get("/api/v1/auth/me")).status_code == 401


async def audit_screen(page: Page) -> None:
    await page.click("#tab-audit")
    await expect(page.locator("#audit")).to_contain_text("token_revoked")
    await page.fill("#audit-form input[name=action]", "user_created")
    await page.click("#audit-search")
    await expect(page.locator("#audit tr")).to_have_count(2)  # header + one entry
    await expect(page.locator("#audit")).to_contain_text("nurse")
    await shot(page, "admin-audit")
    async with page.expect_download() as download:
        await page.click("#audit-csv")
    path = await (await download.value).path()
    text = path.read_text()
    assert text.splitlines()[0].startswith("at,actor,action")
    assert "user_created" in text and "token_revoked" not in text


async def settings_screen(page: Page, peers: SettingsPeers) -> None:
    await page.click("#nav-settings")
    await expect(page.locator("#station-form")).to_contain_text("Calling AE title of this station")
    await expect(page.locator("#local-scp")).to_contain_text("not the calling AE title")
    row = page.locator("#destinations tr[data-destination]")
    await row.locator("[data-action=edit]").click()
    await page.fill("#destination-form input[name=host]", "10.0.0.8")
    # Storage Commitment (PS3.4 Annex J) for this archive, with its report time-out.
    await page.check("#destination-form input[name=commitment_required]")
    await page.fill("#destination-form input[name=commitment_timeout_s]", "900")
    await page.click("#destination-save")
    await expect(page.locator("#destinations")).to_contain_text("10.0.0.8")
    await expect(page.locator("#destinations")).to_contain_text("commitment required")
    await page.locator("#destinations [data-action=toggle]").click()
    await expect(page.locator("#destinations")).to_contain_text("disabled")
    (dest,) = peers.destinations.values()
    assert (dest.host, dest.enabled, dest.name) == ("10.0.0.8", False, "PACS")
    assert (dest.commitment_required, dest.commitment_timeout_s) == (True, 900)
    # A DICOMweb (STOW-RS) destination: its own fields, the password sent once, never shown.
    form = "#destination-form"
    await page.select_option(f"{form} select[name=kind]", "dicomweb")
    await expect(page.locator(f"{form} input[name=host]")).to_be_hidden()
    await page.fill(f"{form} input[name=name]", "Archive")
    await page.fill(f"{form} input[name=base_url]", "https://archive.local/dicom-web")
    await page.select_option(f"{form} select[name=auth]", "basic")
    await page.fill(f"{form} input[name=username]", "station")
    await page.fill(f"{form} input[name=secret]", "Ui-Secret-9")
    await page.click("#destination-save")
    await expect(page.locator("#destinations")).to_contain_text("https://archive.local/dicom-web")
    web = peers.destinations["new"]
    assert (web.kind, web.auth, web.username, web.secret) == (
        "dicomweb",
        "basic",
        "station",
        "Ui-Secret-9",
    )
    assert "Ui-Secret-9" not in await page.content()
    await page.fill("#destination-form input[name=port]", "70000")
    await shot(page, "admin-settings")
    # The toast sits over the bottom of the viewport, where the scrolled-to button lands.
    await expect(page.locator("#toast")).to_be_hidden(timeout=15_000)
    await page.locator("#worklist-servers [data-action=delete]").click()
    await expect(page.locator("#toast")).to_contain_text("Worklist server deleted")
    assert peers.servers == {}


async def viewer_pages(browser: Any, gw: RunningGateway) -> None:
    """A viewer sees dashboards; a change is refused with the reason."""
    admin = await gw.login()
    await admin.post(
        "/api/v1/users", json={"username": "wall", "password": "Viewer-Pass-1", "role": "viewer"}
    )
    await admin.aclose()
    page = await browser.new_page(viewport=VIEWPORT)
    await log_in(page, gw.url, "wall", "Viewer-Pass-1")
    await expect(page.locator("#password-required")).to_be_visible()  # one-time: changed first
    await page.fill("#password-form input[name=current_password]", "Viewer-Pass-1")
    await page.fill("#password-form input[name=new_password]", "Viewer-Own-2")
    await page.fill("#password-form input[name=repeat]", "Viewer-Own-2")
    await page.click("#password-submit")
    await expect(page.locator("#toast")).to_contain_text("Password changed")
    await page.click("#nav-ops")
    await expect(page.locator("#health")).to_be_visible()
    await expect(page.locator("#nav-admin")).to_be_hidden()
    await page.click("#nav-settings")
    await expect(page.locator("#station-form")).to_contain_text("Only an administrator")
    await page.close()


async def api_docs_offline(browser: Any, gw: RunningGateway) -> None:
    page = await browser.new_page()
    outside: list[str] = []
    problems: list[str] = []

    async def only_gateway(route: Route) -> None:
        if route.request.url.startswith(gw.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_gateway)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(f"{gw.url}/api/v1/docs")
    await expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=20_000)
    await expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/rooms/{room}/study")
    await shot(page, "api-docs")
    assert outside == [], outside
    assert not [p for p in problems if "Content Security Policy" in p], problems
    await page.close()


async def test_logging_out_in_one_tab_logs_out_the_others(gateway_factory: Any) -> None:
    """The other tabs of the browser kept the page they showed (a patient's Room, the Local
    list) until their next request found the session gone; they go to the log-in at once."""
    gw = await gateway_factory()
    try:
        async with chromium() as browser:
            context = await browser.new_context(viewport=VIEWPORT)
            first, second = await context.new_page(), await context.new_page()
            await log_in(first, gw.url, at="#/local")
            await second.goto(f"{gw.url}/#/local")
            await expect(second.locator("#local-form")).to_be_visible()
            await expect(second.locator("#whoami")).to_contain_text("admin (")
            await first.click("#logout")
            await expect(first.locator("#login-form")).to_be_visible()
            await expect(second.locator("#login-form")).to_be_visible(timeout=10_000)
            await expect(second.locator("#topbar")).to_be_hidden()
            await expect(second.locator("#local-form")).to_have_count(0)
    finally:
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)
