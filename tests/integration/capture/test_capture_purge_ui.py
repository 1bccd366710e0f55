"""The delivery ledger on screen (docs/purge.md "Ledger"), in headless Chromium against the
station of purge_station.py: the study list's ledger badge per study, each item's badge in the
room's study (its destinations in the title), Hold and Release by an administrator, and after
the purge the reason the UI shows when an action needs the removed files."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from .purge_station import Station

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def search(page: Page) -> None:
    await page.click("#nav-local")
    await page.click("#local-search")


async def test_the_ledger_badges_hold_and_release_and_a_purged_study_s_reason(
    station: Station,
) -> None:
    unsent, study = await station.kept_and_committed(retention_days=1)
    async with station.browser() as page:
        # The study list: one badge per study, as the ledger says.
        await search(page)
        listed = page.locator(f"tr[data-study='{study.study_id}'] .ledger-badge")
        await expect(listed).to_have_attribute("data-ledger", "committed", timeout=30_000)
        other = page.locator(f"tr[data-study='{unsent.study_id}'] .ledger-badge")
        await expect(other).to_have_attribute("data-ledger", "converted")

        # The room's study: each item committed at the archive.
        await page.click("#nav-room")
        items = page.locator("#thumbs .item-ledger")
        await expect(items).to_have_count(2, timeout=30_000)
        for i in range(2):
            await expect(items.nth(i)).to_have_attribute("data-ledger", "committed")
            await expect(items.nth(i)).to_have_attribute("title", "archive: committed")

        # Hold, then Release (administrator); the line says what the policy will do.
        line = page.locator("#study-ledger")
        await expect(line).to_have_attribute("data-purge", "scheduled", timeout=30_000)
        await page.click("#hold-button")
        await expect(page.locator("#toast")).to_contain_text("Study held")
        await expect(line).to_have_attribute("data-purge", "held", timeout=30_000)
        await station.policy(purge_retention_days=0)
        assert (await station.run()).started == []  # held: kept
        await station.intact(study)
        await page.click("#hold-button")
        await expect(page.locator("#toast")).to_contain_text("Study released")
        await expect(line).to_have_attribute("data-purge", "scheduled", timeout=30_000)

        assert (await station.run()).started == [study.study_id]
        await station.gone(study, "retention")
        await page.reload()
        await expect(line).to_have_attribute("data-purge", "purged", timeout=30_000)
        await expect(items).to_have_count(2, timeout=30_000)
        for i in range(2):
            await expect(items.nth(i)).to_have_attribute("data-ledger", "purged")
        # Save (convert again) needs the removed files: the operator reads why not.
        await page.click("#save-button")
        toast = page.locator("#toast")
        await expect(toast).to_contain_text("study purged on")
        await expect(toast).to_contain_text("local data removed after commitment")
        await search(page)
        await expect(listed).to_have_attribute("data-ledger", "purged", timeout=30_000)
        await expect(other).to_have_attribute("data-ledger", "converted")
    await station.intact(unsent)
    actions = await station.pool.fetch(
        "SELECT action FROM gateway_audit_log WHERE study_id = $1 ORDER BY at", study.uuid
    )
    assert [a["action"] for a in actions][-3:] == ["study_held", "study_released", "study_purged"]
