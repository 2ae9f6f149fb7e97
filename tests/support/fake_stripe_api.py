"""A stateful fake of the parts of Stripe's HTTP API that reconciliation reads, served through
`responses` at Stripe's boundary: the Events list (with its cursor semantics), subscriptions,
payment intents and charges."""

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

BASE = "https://stripe.fake"


class FakeStripeApi:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # oldest first; Stripe lists newest first
        self.objects: dict[str, dict[str, Any]] = {}
        self.list_calls: list[dict[str, list[str]]] = []
        self.rate_limit_calls: set[int] = set()  # 1-based numbers of list calls answered 429

    def add_event(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return event

    def _list(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url or "").query)
        self.list_calls.append(query)
        if len(self.list_calls) in self.rate_limit_calls:
            error = {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}
            return 429, {}, json.dumps(error)
        newest_first = list(reversed(self.events))
        if "created[gte]" in query:
            newest_first = [e for e in newest_first if e["created"] >= int(query["created[gte]"][0])]
        limit = int(query.get("limit", ["10"])[0])
        ids = [e["id"] for e in newest_first]
        if "starting_after" in query:
            after = query["starting_after"][0]
            rest = newest_first[ids.index(after) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif "ending_before" in query:
            before = query["ending_before"][0]
            if before not in ids:
                error = {"error": {"type": "invalid_request_error", "message": f"No such event: '{before}'"}}
                return 404, {}, json.dumps(error)
            newer = newest_first[: ids.index(before)]
            page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = newest_first[:limit], len(newest_first) > limit
        body = {"object": "list", "url": "/v1/events", "data": page, "has_more": has_more}
        return 200, {}, json.dumps(body)

    def _retrieve(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        object_id = urlsplit(request.url or "").path.rsplit("/", 1)[-1]
        if object_id not in self.objects:
            return 404, {}, json.dumps({"error": {"type": "invalid_request_error", "message": "No such object"}})
        return 200, {}, json.dumps(self.objects[object_id])

    @contextmanager
    def serving(self) -> Iterator["FakeStripeApi"]:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add_callback(responses.GET, f"{BASE}/v1/events", callback=self._list)
            for kind in ("subscriptions", "payment_intents", "charges"):
                mock.add_callback(
                    responses.GET, re.compile(rf"{re.escape(BASE)}/v1/{kind}/\w+"), callback=self._retrieve
                )
            yield self
