"""Station-wide settings (table `station_settings`, owned by the gateway, whose settings page
edits them and whose migrations create it), read by every service, with defaults when a key is
unset."""

from __future__ import annotations

from typing import Any, Literal, Self

import asyncpg
from pydantic import BaseModel, Field, model_validator

from .db import Connection


class StationSettings(BaseModel):
    """What the settings page edits; statement §4.4 (configuration) and §6 (character sets)."""

    station_name: str = "CINEBRIDGE"
    local_ae_title: str = "SPACS"  # statement Table 25
    character_set: str = "ISO_IR 192"
    video_transfer_syntax: str = "1.2.840.10008.1.2.4.102"
    #: IOD profile (converter README): "standard" picks the SOP classes by the study's Modality;
    #: "videostation" (or "sc") is the statement's Secondary Capture for everything.
    iod: str = "standard"
    worklist_character_set: str = "ISO_IR 192"
    wildcard_matching: bool = True
    #: When a study's Modality Performed Procedure Step is created IN PROGRESS (PS3.4 F.7.2,
    #: IHE RAD-6): at the first snapshot or recording ("first-capture"), or as soon as the
    #: operator starts the study ("study-start").
    mpps_trigger: Literal["first-capture", "study-start"] = "first-capture"
    #: Local purge policy (docs/purge.md): off until an administrator turns it on. A study is
    #: purged only once every destination marked "commitment required" committed it, and
    #: `purge_retention_days` after that; below `purge_low_watermark_percent` of free space in
    #: the media store the oldest committed studies go first, regardless of retention, until
    #: free space is back above `purge_high_watermark_percent`.
    purge_enabled: bool = False
    purge_retention_days: float = Field(default=30.0, ge=0, le=36500)
    purge_low_watermark_percent: float = Field(default=10.0, ge=0, le=100)
    purge_high_watermark_percent: float = Field(default=15.0, ge=0, le=100)

    @model_validator(mode="after")
    def _watermarks_ordered(self) -> Self:
        if self.purge_high_watermark_percent < self.purge_low_watermark_percent:
            raise ValueError("the high watermark must not be below the low watermark")
        return self


async def load_station_settings(conn: asyncpg.Pool | Connection) -> StationSettings:
    """The settings saved on the gateway's settings page, defaults for every key not saved.

    The table comes with the gateway's migrations: on a new station where another service
    starts first it does not exist yet, which means what an empty table means (nothing saved)."""
    try:
        rows = await conn.fetch("SELECT key, value FROM station_settings")
    except asyncpg.UndefinedTableError:
        rows = []
    values: dict[str, Any] = {r["key"]: r["value"] for r in rows}
    known = {k: v for k, v in values.items() if k in StationSettings.model_fields}
    return StationSettings.model_validate(known)
