"""Credentials for each part of a split `/import`: a part must be valid for its own project.

Mixpanel's /import takes three kinds of `Authorization: Basic` (import-events.mdx): a project
token as the user with no password (mixpanel-java sends the first record's token), a service
account `user:secret` plus `?project_id=`, or a project API secret with no password (Node,
Python, Ruby, PHP legacy). A batch that mixes projects is sent as one part per project:

- token auth: each part carries `Basic <its own token>:`;
- service account: each part carries the same account and `project_id=` of its records' project
  (from `[[projects]] project_id`); a project without one cannot be addressed, so the batch is
  refused before anything is sent;
- a project secret (or a legacy `api_key=` field) belongs to one project, and the relay cannot
  know the others': a mixed batch is refused before anything is sent.

Refused means 400 JSON naming the reason: the SDKs that send /import are server SDKs, which
raise it to their caller (no queue waits behind it, and nothing was half-delivered).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


class MixedCredentials(Exception):
    """A mixed-project /import whose parts the relay cannot authenticate: answer 400."""

    status: ClassVar[int] = 400
    reason: ClassVar[str] = "mixed_import"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class ImportPart:
    region: str
    records: list[Any]
    authorization: str | None = None   # None: the request's own header, unchanged
    project_id: int | None = None      # set: the part's `project_id=` query field


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of `Authorization: Basic base64(user:password)`, else None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, _, password = decoded.partition(":")
    return (user, password) if user else None


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def import_parts(authorization: str, has_api_key: bool, regions: Mapping[str, list[Any]],
                 token_of: Callable[[Any], str | None],
                 project_ids: Mapping[str, int | None]) -> list[ImportPart]:
    """The parts of an /import whose records `regions` groups by region, with their credentials.

    `project_ids` maps every listed token to its `project_id` (None when not listed).
    """
    credentials = basic_credentials(authorization)
    tokens = {token for records in regions.values() for record in records
              if (token := token_of(record))}
    if credentials is None or (credentials[0] not in tokens and credentials[0] not in project_ids
                               and not credentials[1]):
        # A project secret, an api_key= field, or nothing at all: valid for one project only.
        if len(regions) > 1 and (credentials is not None or has_api_key):
            raise MixedCredentials(
                "this /import mixes projects of different regions and is authenticated with a "
                "project secret (or api_key), which is valid for one project only: send each "
                "project's events separately, or authenticate with the project token or a "
                "service account")
        return [ImportPart(region, records) for region, records in regions.items()]
    user = credentials[0]
    by_token = _by_key(regions, lambda record: token_of(record) or user)
    if len(by_token) == 1:     # one project: its own credentials, untouched
        return [ImportPart(region, records) for (region, _), records in by_token.items()]
    if user in tokens or user in project_ids:
        return [ImportPart(region, records, authorization=basic(token))
                for (region, token), records in by_token.items()]
    by_project = _by_key(regions, lambda record: _project_id(token_of(record), project_ids))
    return [ImportPart(region, records, project_id=project_id)
            for (region, project_id), records in by_project.items()]


def _by_key(regions: Mapping[str, list[Any]],
            key_of: Callable[[Any], Any]) -> dict[tuple[str, Any], list[Any]]:
    """The records of each (region, key), in their order."""
    grouped: dict[tuple[str, Any], list[Any]] = {}
    for region, records in regions.items():
        for record in records:
            grouped.setdefault((region, key_of(record)), []).append(record)
    return grouped


def _project_id(token: str | None, project_ids: Mapping[str, int | None]) -> int:
    found = project_ids.get(token) if token else None
    if found is None:
        shown = f"token {token[:6]}…" if token else "a record without a token"
        raise MixedCredentials(
            f"this /import mixes projects under a service account, and {shown} has no "
            "project_id in [[projects]]: the relay cannot address its part; list the project's "
            "project_id, or send each project's events with its own ?project_id=")
    return found
