"""The exact requests each official Mixpanel SDK sends, and each SDK's own reading of an answer.

Every builder names the SDK source file (repository @ commit) its shape comes from; the
snapshots are the ones listed in /work/shared/docs/sdk-endpoints.md. A `Shape` is one request as
it crosses the wire (method, target with its query, headers, body bytes, gzip), plus the SDK's
success check ported from that source, and its reading of a failure: whether the batch is kept
for a retry or deleted.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from tests.sdk.wire import (
    Reading,
    Reply,
    Shape,
    b64,
    basic,
    json_or_none,
    records_of,
    send,
    status_one,
)

__all__ = ["Reading", "Reply", "Shape", "b64", "basic", "records_of", "send"]

# -- mobile ------------------------------------------------------------------------------------
ANDROID = "mixpanel/mixpanel-android@ce46b76"


def android(endpoint: str, records: list[Any], *, gzipped: bool = False, ip: str = "1",
            debug: bool = False) -> Shape:
    """mixpanel-android: `analytics/src/main/java/com/mixpanel/android/mpmetrics/
    AnalyticsMessages.java` (`sendData`: params data=<Base64Coder>, verbose=1 only in DEBUG),
    `MPConfig.java` (`getEndPointWithIpTrackingParam`: `?ip=1|0`), `util/HttpService.java`
    (form body, opt-in gzip of the whole form with `Content-Encoding: gzip`; 2xx = done whatever
    the body, 5xx and every 4xx keep the batch queued)."""
    fields = {"data": b64(records), **({"verbose": "1"} if debug else {})}
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return Shape("android", "POST", f"/{endpoint}/?ip={ip}", headers, body,
                 success=lambda status, _: 200 <= status < 300,
                 on_failure=lambda status: "kept")


SWIFT = "mixpanel/mixpanel-swift@8399b37"


def swift(endpoint: str, records: list[Any], *, gzipped: bool = False) -> Shape:
    """mixpanel-swift >= 3.1.1: `Sources/FlushRequest.swift` (`sendRequest`: raw JSON array,
    `Content-Type: application/json`, `?ip=1|0`, gzip of events only when `useGzipCompression`),
    `Sources/Network.swift` (only HTTP 200 is success), `Sources/Flush.swift` (a failed batch is
    kept and the flush loop stops behind it). Also React Native and Flutter on iOS."""
    body = json.dumps(records).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped and endpoint == "track":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return Shape("swift", "POST", f"/{endpoint}/?ip=1", headers, body,
                 success=lambda status, _: status == 200, on_failure=lambda status: "kept")


IPHONE = "mixpanel/mixpanel-iphone@b75007a"


def _iphone_failure(status: int) -> Reading:
    # parseHTTPFailure: only transport errors and 5xx are failures; a 4xx deletes the batch.
    return "kept" if 500 <= status <= 599 else "deleted"


def iphone(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-iphone >= 4.2.0: `Sources/MPNetwork.m` (`buildPostRequestForEndpoint`: raw JSON
    body, `Content-Type: application/json`, `?ip=1`; `parseHTTPFailure` retries only 5xx and
    transport errors: every 4xx, 429 included, deletes the batch)."""
    return Shape("iphone", "POST", f"/{endpoint}/?ip=1", {"Content-Type": "application/json"},
                 json.dumps(records).encode(),
                 success=lambda status, _: not (500 <= status <= 599) and status < 400,
                 on_failure=_iphone_failure)


UNITY = "mixpanel/mixpanel-unity@e5e0048"


def unity(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-unity: `Mixpanel/Controller.cs` (`UnityWebRequest.Post(url, form)` with
    `data=<plain JSON>` to `{APIHostAddress}track/?ip=1`; any failure is retried with backoff)."""
    body = urlencode({"data": json.dumps(records)}).encode()
    return Shape("unity", "POST", f"/{endpoint}/?ip=1",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=lambda status, _: 200 <= status < 300, on_failure=lambda status: "kept")


REACT_NATIVE = "mixpanel/mixpanel-react-native@ae642fe"


def react_native_js(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-react-native JavaScript mode: `javascript/mixpanel-network.js` (POST
    `/track/?ip=1`, form `data=<urlencoded plain JSON>`; 400 is not retried, others are)."""
    body = ("data=" + quote(json.dumps(records), safe="")).encode()
    return Shape("react-native-js", "POST", f"/{endpoint}/?ip=1",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=lambda status, _: status == 200,
                 on_failure=lambda status: "deleted" if status == 400 else "kept")


BROWSER = "mixpanel/mixpanel-js@4ca40f4"


def _browser_failure(status: int) -> Reading:
    # request-batcher.js: retry on >= 500 and 429; 413 halves; any other status removes the batch.
    return "kept" if status >= 500 or status in (429, 413) else "deleted"


def browser(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-js batcher: `src/request-batcher.js` (POST `?verbose=1&ip=1&_=<ms>`, form
    `data=<encodeURIComponent(base64)>`, retry on >= 500 / 429, halve on 413, drop otherwise)."""
    body = ("data=" + quote(b64(records), safe="")).encode()
    return Shape("browser", "POST", f"/{endpoint}/?verbose=1&ip=1&_=1764330000000",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=status_one, on_failure=_browser_failure)


# -- server SDKs (they never retry on their own: a failure is raised to the caller) -------------
PYTHON = "mixpanel/mixpanel-python@176d855"


def python(endpoint: str, records: list[Any], *, secret: str = "",
           project_id: int | None = None, service_account: tuple[str, str] | None = None) -> Shape:
    """mixpanel-python: `mixpanel/__init__.py` (`Consumer._write_request`: POST form
    `data=<JSON>&verbose=1&ip=0` (body fields); /import with `Authorization: Basic secret:` or
    the service account plus `?project_id=`; success only when the JSON answer has status 1)."""
    body = urlencode({"data": json.dumps(records), "verbose": 1, "ip": 0}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    target = f"/{endpoint}"
    if service_account is not None:
        headers["Authorization"] = basic(*service_account)
        target += f"?project_id={project_id}"
    elif secret:
        headers["Authorization"] = basic(secret)
    return Shape("python", "POST", target, headers, body, success=status_one,
                 on_failure=lambda status: "raised")


RUBY = "mixpanel/mixpanel-ruby@35be7ba"


def ruby(endpoint: str, records: list[Any], *, project_id: int | None = None,
         service_account: tuple[str, str] | None = None) -> Shape:
    """mixpanel-ruby: `lib/mixpanel-ruby/consumer.rb` (`send!`: form `data=<Base64 without
    newlines>&verbose=1`; /import with a service account: Basic user:secret + `?project_id=`;
    success only for code 200 and JSON status 1)."""
    body = urlencode({"data": b64(records), "verbose": 1}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    target = f"/{endpoint}"
    if service_account is not None:
        headers["Authorization"] = basic(*service_account)
        target += f"?project_id={project_id}"
    return Shape("ruby", "POST", target, headers, body, success=status_one,
                 on_failure=lambda status: "raised")


NODE = "mixpanel/mixpanel-node@5a64791"


def _node_success(verbose: bool) -> Callable[[int, bytes], bool]:
    # lib/mixpanel-node.js send_request: the HTTP status is never looked at, only the body.
    def check(status: int, body: bytes) -> bool:
        if verbose:
            parsed = json_or_none(body)
            return isinstance(parsed, dict) and parsed.get("status") == 1
        return body == b"1"
    return check


def node(endpoint: str, records: list[Any], *, method: str = "POST", verbose: bool = False,
         secret: str = "") -> Shape:
    """mixpanel-node: `lib/mixpanel-node.js` (`send_request`: query `ip=0&verbose=0|1`, GET puts
    `data=<base64>` in the query, POST (track_batch, import_batch) sends form `data=<base64>`;
    /import with `Authorization: Basic secret:`; success is the body `1`, or JSON status 1 when
    verbose: the HTTP status is never read)."""
    query = {"ip": 0, "verbose": 1 if verbose else 0}
    headers: dict[str, str] = {}
    body = b""
    if method == "GET":
        target = f"/{endpoint}?" + urlencode({**query, "data": b64(records)})
    else:
        target = f"/{endpoint}?" + urlencode(query)
        body = f"data={b64(records)}".encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if secret:
        headers["Authorization"] = basic(secret)
    return Shape("node", method, target, headers, body, success=_node_success(verbose),
                 on_failure=lambda status: "raised")


JAVA = "mixpanel/mixpanel-java@5f5c367"


def _java_import_success(status: int, body: bytes) -> bool:
    # MixpanelAPI.sendImportData: "1", or JSON with status "OK" and code 200.
    if status != 200:
        return False
    if body.strip() == b"1":
        return True
    parsed = json_or_none(body)
    return isinstance(parsed, dict) and parsed.get("status") == "OK" and parsed.get("code") == 200


def java(endpoint: str, records: list[Any], *, strict: bool = True, gzipped: bool = False,
         token: str = "") -> Shape:
    """mixpanel-java: `src/main/java/com/mixpanel/mixpanelapi/MixpanelAPI.java` (`deliver`:
    track/engage/groups `?ip=0|1`, form `data=<urlencoded base64>`, success only for the body
    `1`; `sendImportData`: `/import?strict=1|0`, JSON body, Basic `<first record's token>:`,
    optional gzip, success only for `1` or `{"code":200,"status":"OK",...}`)."""
    if endpoint == "import":
        body = json.dumps(records).encode()
        headers = {"Content-Type": "application/json", "Authorization": basic(token)}
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Shape("java", "POST", f"/import?strict={1 if strict else 0}", headers, body,
                     success=_java_import_success, on_failure=lambda status: "raised")
    body = ("data=" + quote(b64(records), safe="")).encode()
    return Shape("java", "POST", f"/{endpoint}?ip=0",
                 {"Content-Type": "application/x-www-form-urlencoded;charset=utf8"}, body,
                 success=lambda status, body: status == 200 and body == b"1",
                 on_failure=lambda status: "raised")


GO = "mixpanel/mixpanel-go@fd9efa0"


def _go_import_success(status: int, body: bytes) -> bool:
    # ingestion.go Import: 200 -> json.Decode into ImportSuccess (a bare `1` fails to decode).
    return status == 200 and isinstance(json_or_none(body), dict)


def go(endpoint: str, records: list[Any], *, strict: bool = True, gzipped: bool = False,
       auth: str = "", project_id: int | None = None) -> Shape:
    """mixpanel-go: `ingestion.go` (`Track`: POST `/track?verbose=1`, JSON body,
    `Accept: text/plain`, `parseVerboseApiError` wants status 1; People/Groups: JSON body to
    `/engage`, `/groups`; `Import`: `/import?strict=1|0[&project_id=]&verbose=1`, JSON body,
    optional gzip, Basic auth, 200 decoded as `ImportSuccess`), `http.go` (headers)."""
    body = json.dumps(records).encode()
    headers = {"Content-Type": "application/json"}
    if endpoint == "import":
        query = {"strict": 1 if strict else 0,
                 **({"project_id": project_id} if project_id is not None else {}), "verbose": 1}
        headers.update({"Accept": "application/json", "Authorization": auth})
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Shape("go", "POST", "/import?" + urlencode(query), headers, body,
                     success=_go_import_success, on_failure=lambda status: "raised")
    if endpoint == "track":
        headers["Accept"] = "text/plain"
        return Shape("go", "POST", "/track?verbose=1", headers, body, success=status_one,
                     on_failure=lambda status: "raised")
    # http.go doPeopleRequest: no verbose, Accept: text/plain; processPeopleRequestResponse
    # decodes the 200 body as an int and fails on 0 (or on anything that is not an int).
    headers["Accept"] = "text/plain"
    return Shape("go", "POST", f"/{endpoint}", headers, body, success=_go_people_success,
                 on_failure=lambda status: "raised")


def _go_people_success(status: int, body: bytes) -> bool:
    parsed = json_or_none(body)
    return status == 200 and type(parsed) is int and parsed != 0


PHP = "mixpanel/mixpanel-php@4b0fafa"


def php(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-php: `lib/ConsumerStrategies/CurlConsumer.php` (POST `data=<base64_encode(json)>`
    not URL-encoded, so `+` `/` `=` arrive literally; no `ip=`; success only for the body `1`;
    curl's default type for a string CURLOPT_POSTFIELDS is a form)."""
    body = f"data={b64(records)}".encode()
    return Shape("php", "POST", f"/{endpoint}",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=lambda status, body: body.strip() == b"1",
                 on_failure=lambda status: "raised")


# -- flags --------------------------------------------------------------------------------------
def mobile_flags(sdk: str, token: str) -> Shape:
    """mixpanel-android `mpmetrics/FeatureFlagManager.java` (context, token, mp_lib=android,
    Basic token) and mixpanel-swift `Sources/FeatureFlags.swift` (the same with mp_lib=swift)."""
    query = urlencode({"context": json.dumps({"distinct_id": "user-1"}), "token": token,
                       "mp_lib": sdk, "$lib_version": "8.9.0"})
    return Shape(sdk, "GET", f"/flags/?{query}", {"Authorization": basic(token)})


def server_flags(sdk: str, token: str, project_id: int | None = None,
                 service_account: tuple[str, str] | None = None) -> Shape:
    """Server-side remote flags: mixpanel-ruby `lib/mixpanel-ruby/flags/flags_provider.rb`
    (query mp_lib, $lib_version, token (+ project_id with a service account), Basic token or
    service account), mixpanel-go `flags/remoteFlags.go`, mixpanel-python
    `mixpanel/flags/remote_feature_flags.py` (the same pairs)."""
    params: dict[str, Any] = {"context": json.dumps({"distinct_id": "user-1"}), "mp_lib": sdk,
                              "$lib_version": "3.3.0", "token": token}
    auth = basic(token)
    if service_account is not None:
        params["project_id"] = project_id
        auth = basic(*service_account)
    return Shape(sdk, "GET", "/flags?" + urlencode(params),
                 {"Authorization": auth, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})


def iphone_legacy(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-iphone 4.0.0–4.1.x: `Sources/MPNetwork.m` @ v4.1.0 (body `ip=1&data=<raw JSON,
    not URL-encoded>`; the SDK sets no Content-Type, Foundation sends a form type)."""
    body = b"ip=1&data=" + json.dumps(records, separators=(",", ":")).encode()
    return Shape("iphone-4.1", "POST", f"/{endpoint}/",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=lambda status, _: status < 400, on_failure=_iphone_failure)


def browser_replay(token: str, events: list[Any], fmt: str = "gzip") -> Shape:
    """mixpanel-js recorder: `src/recorder/session-recording.js` (POST `/record/?format=gzip|
    body&seq=…&replay_id=…&…&mp_lib=web`, `Authorization: Basic token:`, `Content-Type:
    application/octet-stream`, gzip of the rrweb JSON, or plain JSON with `format=body` where
    CompressionStream is unusable; `seq` advances only on a 200)."""
    query = urlencode({"format": fmt, "seq": 0, "replay_id": "r-1",
                       "replay_start_time": 1764330000.0, "batch_start_time": 1764330000.0,
                       "replay_length_ms": 1000, "distinct_id": "user-1", "mp_lib": "web",
                       "$lib_version": "2.83.0"})
    raw = json.dumps(events).encode()
    return Shape("browser-replay", "POST", f"/record/?{query}",
                 {"Authorization": basic(token), "Content-Type": "application/octet-stream"},
                 gzip.compress(raw) if fmt == "gzip" else raw)


def iphone_3(endpoint: str, records: list[Any]) -> Shape:
    """mixpanel-iphone 3.x: `Mixpanel/MPNetwork.m` @ v3.9.2 (body `ip=1&data=<base64 with CRLF
    every 64 characters (NSDataBase64Encoding64CharacterLineLength), not URL-encoded>`, so `+`,
    `/`, `=` and line breaks arrive literally in a form body; no Content-Type set by the SDK)."""
    encoded = b64(records).encode()
    body = b"ip=1&data=" + b"\r\n".join(encoded[i:i + 64] for i in range(0, len(encoded), 64))
    return Shape("iphone-3", "POST", f"/{endpoint}/",
                 {"Content-Type": "application/x-www-form-urlencoded"}, body,
                 success=lambda status, _: status < 400, on_failure=_iphone_failure)


# One /track batch per SDK family, as that SDK sends it.
TRACK_BATCHES: dict[str, Callable[[list[Any]], Shape]] = {
    "android": lambda records: android("track", records),
    "android-gzip": lambda records: android("track", records, gzipped=True),
    "swift": lambda records: swift("track", records),
    "swift-gzip": lambda records: swift("track", records, gzipped=True),
    "iphone": lambda records: iphone("track", records),
    "unity": lambda records: unity("track", records),
    "react-native-js": lambda records: react_native_js("track", records),
    "browser": lambda records: browser("track", records),
    "python": lambda records: python("track", records),
    "ruby": lambda records: ruby("track", records),
    "node": lambda records: node("track", records),
    "java": lambda records: java("track", records),
    "go": lambda records: go("track", records),
    "php": lambda records: php("track", records),
}
