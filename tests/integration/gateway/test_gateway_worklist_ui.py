"""The worklist table in Chromium: a large answer paged, a flagged entry marked with its values."""

from __future__ import annotations

from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    Reply,
    ValueFlag,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
)
from cinebridge_testkit.browser import ui_page
from playwright.async_api import expect

pytestmark = pytest.mark.integration

ENTRIES = 250


def entry(n: int) -> WorklistItem:
    flags = []
    if n == 1:
        flags = [
            ValueFlag(
                tag="(0010,0030)",
                keyword="PatientBirthDate",
                problem="not a date YYYYMMDD (DA)",
                action="left empty",
                value="1980-13-45",
            )
        ]
    return WorklistItem(
        patient_name=f"PATIENT^N{n:03d}",
        patient_id=f"PID{n:05d}",
        accession_number=f"ACC{n:05d}",
        scheduled_procedure_step_start_date="20261207",
        item_key=f"key{n}",
        flags=flags,
    )


async def test_a_large_answer_is_paged_and_a_flagged_entry_is_marked(
    gateway: Any, peer_bus: Bus
) -> None:
    async def query(q: WorklistQuery) -> Reply:
        return WorklistQueryReply(
            outcome="complete",
            items=[entry(n) for n in range(ENTRIES)],
            warnings=["1 entries have flagged values (marked in the list)"],
        )

    await peer_bus.serve(WorklistQuery, query)
    gw = gateway
    async with ui_page(gw.url) as page:
        await page.goto(f"{gw.url}/#/worklist")
        await page.click("#worklist-search")
        rows = page.locator("#worklist-table tr")
        await expect(rows).to_have_count(101)  # the header and a page of 100
        await expect(page.locator("#worklist-range").first).to_have_text("1\u2013100 of 250")
        flagged = page.locator("#worklist-table tr.flagged")
        await expect(flagged).to_have_count(1)
        await expect(flagged.locator(".flag-note")).to_contain_text("1980-13-45")
        await expect(flagged.locator(".flag-note")).to_contain_text("left empty")
        await page.locator("#worklist-next").first.click()
        await expect(page.locator("#worklist-range").first).to_have_text("101\u2013200 of 250")
        await expect(rows.nth(1).locator("td").nth(1)).to_have_text("PID00100")
        await page.locator("#worklist-next").first.click()
        await expect(page.locator("#worklist-range").first).to_have_text("201\u2013250 of 250")
        await expect(rows).to_have_count(51)
        await expect(page.locator("#worklist-next").first).to_be_disabled()
