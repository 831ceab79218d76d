"""A small client of the gateway's admin API, for `regate agents ...` and the demo."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from regate.settings import Address, AdminSettings, Settings


class AdminClientError(Exception):
    """The admin API refused or could not be reached; the message says why."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdminClient:
    def __init__(
        self, address: Address, token: str, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        if address.uds and transport is None:
            transport = httpx.HTTPTransport(uds=str(address.uds))
        self._http = httpx.Client(
            base_url=address.base_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=30,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, url: str | None = None, token_file: Path | None = None
    ) -> AdminClient:
        admin = settings.admin
        if admin is None and (url is None or token_file is None):
            raise AdminClientError(
                f"{settings.source} has no [admin] section: the admin API is not served"
            )
        base = settings.source.parent
        address = Address.parse(url, "--url", base) if url else _listen(admin)
        path = token_file or _token_file(admin)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AdminClientError(f"cannot read the admin token {path}: {exc.strerror}") from exc
        return cls(address, token)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def agents(self) -> dict[str, Any]:
        return self._call("GET", "/admin/api/agents")

    def agent(self, agent_id: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/api/agents/{agent_id}")

    def diff(self, agent_id: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/api/agents/{agent_id}/diff")

    def approve(
        self,
        agent_id: str,
        *,
        reason: str = "",
        permissions: Mapping[str, Sequence[str]] | None = None,
        manifest_sha256: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if permissions is not None:
            body["permissions"] = {tool: list(p) for tool, p in permissions.items()}
        if manifest_sha256 is not None:
            body["manifest_sha256"] = manifest_sha256
        return self._call("POST", f"/admin/api/agents/{agent_id}/approve", body)

    def revoke(self, agent_id: str, *, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/admin/api/agents/{agent_id}/revoke", {"reason": reason})

    # --- approvals of calls (not of manifests) ---

    def call_approvals(self, status: str | None = None) -> dict[str, Any]:
        params = {"status": status} if status else None
        return self._call("GET", "/admin/api/call-approvals", params=params)

    def call_approval(self, approval_id: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/api/call-approvals/{_segment(approval_id)}")

    def approve_call(self, approval_id: str, *, reason: str) -> dict[str, Any]:
        path = f"/admin/api/call-approvals/{_segment(approval_id)}/approve"
        return self._call("POST", path, {"reason": reason})

    def deny_call(self, approval_id: str, *, reason: str) -> dict[str, Any]:
        path = f"/admin/api/call-approvals/{_segment(approval_id)}/deny"
        return self._call("POST", path, {"reason": reason})

    def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise AdminClientError(f"cannot reach the admin API: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise AdminClientError(
                f"{response.status_code} {error.get('code', 'error')}:"
                f" {error.get('message', response.text[:200])}",
                status=response.status_code,
                code=error.get("code"),
            )
        if not isinstance(data, dict):
            raise AdminClientError("the admin API answered with something other than an object")
        return data


def _segment(value: str) -> str:
    """One path segment: an id typed by a person must not walk to another endpoint."""
    return urllib.parse.quote(value, safe="")


def _listen(admin: AdminSettings | None) -> Address:
    assert admin is not None
    return admin.listen


def _token_file(admin: AdminSettings | None) -> Path:
    assert admin is not None
    return admin.token_file
