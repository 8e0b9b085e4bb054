"""The Ray job server's REST API, spoken with the standard library.

The same requests Ray's own ``JobSubmissionClient`` sends (``ray/dashboard/modules/
dashboard_sdk.py`` and ``job/sdk.py``): ``GET /api/version``; ``GET`` then ``PUT
/api/packages/gcs/_ray_pkg_<hash>.zip`` (the ``GET`` also pins the package for a while,
so it survives until the job that names it is submitted); ``POST /api/jobs/``;
``GET /api/jobs/{id}``, ``/logs``; ``POST /api/jobs/{id}/stop``. Choosing this over the
SDK keeps ``ray`` (380 MB, a second of import time) off amlrun's machine.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from amlrun.errors import TargetUnavailable

#: job states (ray.job_submission.JobStatus)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
ACTIVE = frozenset({"PENDING", "RUNNING"})


class JobServerError(TargetUnavailable):
    """The job server answered with an error (or not at all)."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class JobServer:
    """One Ray cluster's job server: ``base`` (``http(s)://host:port``) and request headers."""

    base: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold resolved secrets
    timeout: float = 30.0

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        body: Any = None,
        ok_missing: bool = False,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        opener = _opener()
        try:
            with opener.open(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            if ok_missing and exc.code == 404:
                return 404, payload
            text = payload.decode("utf-8", "replace").strip().splitlines()
            detail = text[-1] if text else exc.reason
            if exc.code in (401, 403):
                detail = f"not authorized ({detail}); set 'headers' in the compute file"
            raise JobServerError(
                f"Ray job server {self.base}: {method} {path.split('?')[0]} -> HTTP {exc.code}: {detail}", exc.code
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JobServerError(f"Ray job server {self.base} does not answer: {reason}") from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, payload = self._request(method, path, **kwargs)
        if status == 404:
            return None
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise JobServerError(
                f"Ray job server {self.base}: {path} answered something that is not JSON "
                "(is 'address' the dashboard port, usually 8265?)"
            ) from None

    # -- the API ----------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        found = self._json("GET", "/api/version")
        if not isinstance(found, dict) or "ray_version" not in found:
            raise JobServerError(f"{self.base} is not a Ray job server (no ray_version in /api/version)")
        return found

    def package_exists(self, uri: str) -> bool:
        status, _ = self._request("GET", "/api/packages/" + _uri_path(uri), ok_missing=True)
        return status == 200

    def upload_package(self, uri: str, data: bytes) -> None:
        self._request("PUT", "/api/packages/" + _uri_path(uri), data=data, timeout=max(self.timeout, 300.0))

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in request.items() if v is not None}  # as the SDK: new fields stay optional
        found = self._json("POST", "/api/jobs/", body=body)
        if not isinstance(found, dict) or "submission_id" not in found:
            raise JobServerError(f"Ray job server {self.base}: unexpected answer to the submission: {found!r}")
        return found

    def info(self, submission_id: str) -> dict[str, Any] | None:
        return self._json("GET", f"/api/jobs/{_q(submission_id)}", ok_missing=True)

    def logs(self, submission_id: str) -> str:
        found = self._json("GET", f"/api/jobs/{_q(submission_id)}/logs", ok_missing=True)
        return str((found or {}).get("logs") or "")

    def stop(self, submission_id: str) -> bool:
        found = self._json("POST", f"/api/jobs/{_q(submission_id)}/stop", ok_missing=True)
        return bool((found or {}).get("stopped"))

    def jobs(self) -> list[dict[str, Any]]:
        found = self._json("GET", "/api/jobs/")
        return [j for j in found or [] if isinstance(j, dict)]

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes (the state API), with their ``resources_total``."""
        found = self._json("GET", "/api/v0/nodes?limit=1000")
        result = ((found or {}).get("data") or {}).get("result") or {}
        return [n for n in result.get("result") or [] if isinstance(n, dict)]


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _uri_path(uri: str) -> str:
    """``gcs://_ray_pkg_x.zip`` -> ``gcs/_ray_pkg_x.zip`` (ray's ``uri_to_http_components``)."""
    protocol, _, name = uri.partition("://")
    return f"{protocol}/{_q(name)}"


_OPENER: list[urllib.request.OpenerDirector] = []


def _opener() -> urllib.request.OpenerDirector:
    """One opener per process (it honours http(s)_proxy and no_proxy, as requests does)."""
    if not _OPENER:
        _OPENER.append(urllib.request.build_opener())
    return _OPENER[0]
