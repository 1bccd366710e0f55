"""The gateway's API as the command line uses it: a bearer token, errors as exit codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1 << 20

#: Exit codes (README): the answer was "no" (degraded, unreachable peer, failures present).
NO = 1
USAGE = 2
#: The gateway could not be reached, or answered with an error that is not the caller's.
UNAVAILABLE = 3
#: No token, a wrong or revoked one, or a role that may not do this.
REFUSED = 4
#: A destination, delivery or server named on the command line does not exist.
NOT_FOUND = 5


class CliError(Exception):
    """Ends the command with a message on stderr and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(body)[:300]


class Api:
    """A small synchronous client of the gateway's /api/v1 (one per command)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise CliError(
                REFUSED,
                "no API token: pass --token or set CINEBRIDGE_TOKEN "
                "(an administrator creates one on the gateway: POST /api/v1/tokens)",
            )
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self._send(method, path, **kw)
        try:
            return response.json()
        except ValueError:
            raise CliError(UNAVAILABLE, f"not a JSON answer from {path}") from None

    def text(self, path: str, accept: str) -> str:
        """A document (Markdown, HTML) rather than JSON."""
        return self._send("GET", path, headers={"Accept": accept}).text

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CliError(UNAVAILABLE, f"gateway {self.url} unreachable: {exc}") from None
        if response.status_code in (401, 403):
            raise CliError(REFUSED, f"refused by the gateway: {_message(response)}")
        if response.status_code == 404:
            raise CliError(NOT_FOUND, _message(response))
        if response.status_code == 502:  # a peer behind the gateway failed (RIS, PACS)
            raise CliError(NO, _message(response))
        if response.status_code >= 500:
            raise CliError(
                UNAVAILABLE, f"gateway error {response.status_code}: {_message(response)}"
            )
        if response.status_code >= 400:
            raise CliError(NO, f"refused ({response.status_code}): {_message(response)}")
        return response

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def upload(self, path: str, file: Path, on_chunk: Callable[[int], None]) -> Any:
        """POST a file as `application/dicom`, streamed in 1 MB chunks (never whole in memory)."""

        def chunks() -> Iterator[bytes]:
            with open(file, "rb") as fh:
                while block := fh.read(CHUNK):
                    yield block
                    on_chunk(len(block))

        headers = {
            "Content-Type": "application/dicom",
            "Content-Length": str(file.stat().st_size),
        }
        return self.call("POST", path, content=chunks(), headers=headers)
