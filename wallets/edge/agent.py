"""The edge agent's work: signing the site's requests with its own key, checking them against the site's view, and
the relay loop that carries the queue to the cloud when the link is up.

Local API → `submit`: checked against the effective view (the parts as last synced from the cloud's query API, with
the effects of the site's own requests not yet in that view laid over them), signed as an ERC-2771 ForwardRequest
with the next nonce of the local counter, committed to the queue, then answered 202. With no link the site keeps
working: nothing here needs the network.

The loop (`run`), when the cloud answers: posts queued requests in nonce order in batches to POST /v1/relay
(retrying on connection errors, 5xx and 429 with backoff; a post repeated after a crash is deduplicated by the
cloud, which knows each signed request by its EIP-712 digest), follows each at GET /v1/relay/{id} to confirmed or
failed (the reason kept as the cloud decoded it), and re-syncs after a failure or every sync interval: the view,
and the nonce from the forwarder's `nonces(signer)` (a JSON-RPC read). A nonce that no live request holds below the
highest live one (a request refused before it could use its nonce) would hold back every later request forever:
the agent signs a filler there, a call that cannot succeed (receiving part 0), so that the forwarder uses the nonce
and the later requests run. Requests never posted whose nonce fell behind the forwarder are signed again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from partledger.artifacts import FORWARDER, calldata, function_spec
from partledger.eip712 import Eip712Domain, ForwardRequest, forward_request_typed_data
from wallets.edge.queue import EdgeStore, request_view

log = logging.getLogger("partledger.edge")
ZERO32 = bytes(32)
MAX_PARTS = 200  # per local request (one contract call)
REFRESH_DEADLINE_BELOW = 3_600  # a request never posted whose deadline is this close is signed again before it goes
FILLER = "nonce_fill"
FILLER_ERROR = "PartLedgerUnknownPart"  # how a filler fails on chain, using its nonce
FOLLOW_PER_PASS = 200  # requests the cloud holds asked about per pass at most ...
FOLLOW_AT_ONCE = 4  # ... so many at a time


class LinkDown(Exception):
    """The cloud or the chain node cannot be reached, or answered with a server error: retry later."""


class Refusal(Exception):
    """The local API refuses a request: HTTP status, a stable code, a message (and the form field at fault, for the
    pages)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class EdgeConfig:
    site: str
    cloud_url: str
    api_key: str
    rpc_url: str
    part_ledger: str
    forwarder: str
    registry: str
    batch_size: int = 100
    sync_interval: float = 10.0
    deadline_seconds: int = 7 * 24 * 3_600
    interval: float = 0.05
    max_backoff: float = 2.0
    timeout: float = 10.0


# --- the links ------------------------------------------------------------------------------------------------


class ChainReader:
    """The few chain reads the agent needs, as plain JSON-RPC eth_calls: the forwarder's nonce and EIP-712 domain
    (ERC-5267), and the registry's record of the site key."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.http = httpx.Client(timeout=config.timeout)

    def _call(self, to: str, data: str) -> bytes:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": to, "data": data}, "latest"]}
        try:
            answer = self.http.post(self.config.rpc_url, json=body)
        except httpx.HTTPError as exc:
            raise LinkDown(f"chain node unreachable: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise LinkDown(f"chain node answered HTTP {answer.status_code}")
        result = answer.json()
        if "error" in result:
            raise LinkDown(f"chain node refused a read: {str(result['error'])[:200]}")
        return bytes.fromhex(result["result"][2:])

    def nonce(self, signer: str) -> int:
        from eth_abi import decode, encode

        selector, _ = function_spec(FORWARDER, "nonces")
        return decode(["uint256"], self._call(self.config.forwarder, "0x" + (selector + encode(["address"], [signer])).hex()))[0]

    def domain(self) -> Eip712Domain:
        from eth_abi import decode
        from eth_utils import to_checksum_address

        selector, _ = function_spec(FORWARDER, "eip712Domain")
        _fields, name, version, chain_id, verifying, _salt, _ext = decode(
            ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"], self._call(self.config.forwarder, "0x" + selector.hex())
        )
        return Eip712Domain(name=name, version=version, chainId=chain_id, verifyingContract=to_checksum_address(verifying))

    def site_key(self, address: str) -> tuple[int, int]:
        """(organisation, revoked block) of a site key; organisation 0 when the registry does not know it."""
        from eth_abi import decode, encode

        selector, _ = function_spec("ConsortiumRegistry", "siteKey")
        org_id, _site, _added, revoked = decode(["uint32", "bytes32", "uint64", "uint64"], self._call(self.config.registry, "0x" + (selector + encode(["address"], [address])).hex()))
        return org_id, revoked


class CloudClient:
    """The cloud's HTTP API, as a member's API key sees it."""

    def __init__(self, config: EdgeConfig) -> None:
        self.http = httpx.Client(base_url=config.cloud_url.rstrip("/"), headers={"Authorization": f"Bearer {config.api_key}"}, timeout=config.timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LinkDown(f"cloud unreachable: {type(exc).__name__}") from None
        if answer.status_code >= 500 or answer.status_code in (401, 403, 429):
            raise LinkDown(f"cloud answered HTTP {answer.status_code} to {method} {path}: {answer.text[:200]}")
        return answer

    def pages(self, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Every item of a paginated list, and the lowest mirror block its pages reflect."""
        items: list[dict[str, Any]] = []
        block: int | None = None
        cursor = None
        while True:
            answer = self.request("GET", path, params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})})
            if answer.status_code != 200:
                raise LinkDown(f"cloud answered HTTP {answer.status_code} to GET {path}: {answer.text[:200]}")
            page = answer.json()
            items += page["items"]
            block = page["block"] if block is None else min(block, page["block"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items, block if block is not None else -1


# --- the agent ------------------------------------------------------------------------------------------------


class EdgeAgent:
    def __init__(self, *, store: EdgeStore, key: Any, config: EdgeConfig, chain: ChainReader | None = None, cloud: CloudClient | None = None) -> None:
        """`key`: the site key (an eth-account LocalAccount); it signs here and is never sent anywhere."""
        self.store = store
        self.key = key
        self.config = config
        self.chain = chain or ChainReader(config)
        self.cloud = cloud or CloudClient(config)
        self.signer: str = key.address
        self._view: dict[str, dict[str, Any]] = {}
        self._resync_wanted = True
        self._last_sync_attempt = 0.0
        self._pool = ThreadPoolExecutor(max_workers=FOLLOW_AT_ONCE, thread_name_prefix="edge-follow")
        with store.transaction() as conn:
            known = store.get("signer")
            if known is not None and known != self.signer:
                raise Refusal(409, "wrong_site_key", f"{store.path} is the queue of {known}, not of {self.signer}")
            store.put(conn, "signer", self.signer)
            store.put(conn, "site", config.site)
        self.rebuild_view()

    # --- the local API's side ---------------------------------------------------------------------------------

    def submit(self, kind: str, part_ids: list[str], payload: dict[str, Any]) -> dict[str, Any]:
        """Checks a receive, install or ship of `part_ids` against the effective view, signs it with the next nonce
        and commits it to the queue; the request as GET /edge/requests/{id} shows it."""
        if self.store.get("org_id") is None:
            raise Refusal(503, "edge_not_synced", "the agent has not synced with the cloud yet: it knows no parts of this site")
        if not part_ids or len(part_ids) > MAX_PARTS:
            raise Refusal(422, "invalid_part_count", f"between 1 and {MAX_PARTS} parts per request")
        ids = [normalise_part_id(part) for part in part_ids]
        if len(set(ids)) != len(ids):
            raise Refusal(422, "duplicate_parts", "a part is named twice in the request")
        org_id = self.store.get("org_id")
        with self.store.lock:
            for part in ids:
                _check(kind, part, self._view.get(part), org_id, payload)
            data = _call_data(kind, ids, payload)
            now = time.time()
            request_id = str(uuid.uuid4())
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO requests (id, kind, payload, parts, target, data, gas, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (request_id, kind, json.dumps(payload), json.dumps(ids), self.config.part_ledger, data, _gas(kind, len(ids)), now, now),
                )  # fmt: skip
                next_nonce, domain = self.store.get("next_nonce"), self._domain()
                if next_nonce is not None and domain is not None:  # else signed at the first sync
                    self._sign(conn, request_id, next_nonce, domain)
                    self.store.put(conn, "next_nonce", next_nonce + 1)
            for part in ids:
                self._view[part] = _effect(kind, self._view.get(part), org_id, payload)
            return self.request(request_id)

    def request(self, request_id: str) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM requests WHERE id = ?", (request_id,))
        if not rows:
            raise Refusal(404, "unknown_request", f"no request {request_id} in this agent's queue")
        return request_view(rows[0])

    def part(self, part_id: str) -> dict[str, Any]:
        part = normalise_part_id(part_id)
        with self.store.lock:
            view = self._view.get(part)
        if view is None:
            raise Refusal(404, "unknown_part", f"part {part} is neither held by this site nor inbound to it")
        pending = [row["id"] for row in self.store.query("SELECT id, parts FROM requests WHERE status IN ('queued', 'relayed') ORDER BY seq") if part in json.loads(row["parts"])]
        return {"part_id": part, **view, "pending_requests": pending, "view_block": self.store.get("view_block"), "last_sync": self.store.get("last_sync")}

    def organisations(self) -> dict[int, str]:
        """The consortium's members (not suspended) as of the last sync: id -> name."""
        return {org["id"]: org["name"] for org in self.store.get("organisations") or []}

    def rebuild_view(self) -> None:
        """The effective view: the synced parts, then the effect of each request not settled, or confirmed in a
        block the synced view does not reflect yet, in queue order."""
        with self.store.lock:
            org_id = self.store.get("org_id")
            view_block = self.store.get("view_block", -1)
            view = {row["part_id"]: {"status": row["status"], "custodian": row["custodian"], "recipient": row["recipient"], "recalled": bool(row["recalled"])} for row in self.store.query("SELECT * FROM parts")}
            overlay = self.store.query(
                "SELECT kind, parts, payload FROM requests WHERE kind != ? AND (status IN ('queued', 'relayed') OR (status = 'confirmed' AND block > ?)) ORDER BY seq", (FILLER, view_block)
            )  # fmt: skip
            for row in overlay:
                payload = json.loads(row["payload"])
                for part in json.loads(row["parts"]):
                    view[part] = _effect(row["kind"], view.get(part), org_id, payload)
            self._view = view

    # --- the loop ---------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Steps until `stop`, backing off while the link is down."""
        delay = self.config.interval
        while not stop.is_set():
            try:
                busy = self.step()
                delay = self.config.interval
                self._set_link("up")
            except LinkDown as exc:
                self._set_link(f"down: {exc}")
                log.warning("%s; retrying in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(max(delay * 2, 0.2), self.config.max_backoff)
                continue
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad step; it is logged
                log.exception("edge agent step failed")
                stop.wait(1.0)
                continue
            if not busy:
                stop.wait(max(self.config.interval, 0.2))

    def step(self) -> bool:
        """One pass: initialise or re-sync when due, post the next batch, follow what the cloud holds."""
        if self.store.get("org_id") is None or self._domain() is None:
            self.initialise()
        if self._resync_wanted or time.monotonic() - self._last_sync_attempt >= self.config.sync_interval:
            self.resync()
        progressed = self.post()
        progressed |= self.follow()
        return progressed

    def initialise(self) -> None:
        """The forwarder's EIP-712 domain and the site key's organisation, from the chain (needs the link)."""
        domain = self.chain.domain()
        org_id, revoked = self.chain.site_key(self.signer)
        if org_id == 0:
            raise LinkDown(f"the registry knows no site key {self.signer}: the operator adds it first")
        with self.store.transaction() as conn:
            self.store.put(conn, "domain", {"name": domain.name, "version": domain.version, "chainId": domain.chainId, "verifyingContract": domain.verifyingContract})
            self.store.put(conn, "org_id", org_id)
        self._resync_wanted = True

    def resync(self) -> None:
        """The view from the cloud's query API and the nonce from the forwarder; gaps filled, unsigned and stale
        requests signed. The view and the nonce are replaced in one SQL transaction."""
        self._last_sync_attempt = time.monotonic()
        org_id = self.store.get("org_id")
        chain_nonce = self.chain.nonce(self.signer)
        held, held_block = self.cloud.pages("/v1/parts", {"custodian": org_id})
        inbound, inbound_block = self.cloud.pages("/v1/parts", {"status": "in_transit"})
        inbound = [part for part in inbound if (part.get("recipient") or {}).get("id") == org_id]
        organisations, _ = self.cloud.pages("/v1/organisations", {})  # the names the pages show, and whom to ship to
        members = [{"id": org["id"], "name": org["name"]} for org in organisations if not org["suspended"]]
        domain = self._domain()
        assert domain is not None
        with self.store.lock, self.store.transaction() as conn:
            conn.execute("DELETE FROM parts")
            conn.executemany(
                "INSERT OR REPLACE INTO parts (part_id, status, custodian, recipient, recalled) VALUES (?, ?, ?, ?, ?)",
                [(part["part_id"].lower(), part["status"], part["custodian"]["id"], (part.get("recipient") or {}).get("id"), int(part["recalled"])) for part in held + inbound],
            )  # fmt: skip
            self.store.put(conn, "view_block", min(held_block, inbound_block))
            self.store.put(conn, "last_sync", time.time())
            self.store.put(conn, "organisations", members)
            # Never posted, and signed for a nonce the forwarder has passed: signed again below.
            conn.execute("UPDATE requests SET nonce = NULL, signature = NULL WHERE status = 'queued' AND posted = 0 AND nonce < ?", (chain_nonce,))
            live = {row["nonce"] for row in conn.execute("SELECT nonce FROM requests WHERE status IN ('queued', 'relayed') AND nonce IS NOT NULL AND nonce >= ?", (chain_nonce,))}
            top = max(live, default=chain_nonce - 1)
            for gap in sorted(set(range(chain_nonce, top)) - live):
                self._insert_filler(conn, gap, domain)
            next_nonce = max(chain_nonce, top + 1)
            for row in conn.execute("SELECT id FROM requests WHERE status = 'queued' AND nonce IS NULL ORDER BY seq").fetchall():
                self._sign(conn, row["id"], next_nonce, domain)
                next_nonce += 1
            self.store.put(conn, "next_nonce", next_nonce)
            self.rebuild_view()
        self._resync_wanted = False

    def post(self) -> bool:
        """Posts the next batch of queued requests, in nonce order, to POST /v1/relay."""
        rows = self.store.query("SELECT * FROM requests WHERE status = 'queued' AND nonce IS NOT NULL ORDER BY nonce LIMIT ?", (self.config.batch_size,))
        if not rows:
            return False
        domain = self._domain()
        assert domain is not None
        now = time.time()
        with self.store.transaction() as conn:
            for row in rows:
                if not row["posted"] and row["deadline"] < now + REFRESH_DEADLINE_BELOW:
                    self._sign(conn, row["id"], row["nonce"], domain)  # never sent: a fresh deadline, the same nonce
            conn.executemany("UPDATE requests SET posted = 1 WHERE id = ?", [(row["id"],) for row in rows])
            rows = conn.execute(f"SELECT * FROM requests WHERE id IN ({','.join('?' * len(rows))}) ORDER BY nonce", [row["id"] for row in rows]).fetchall()
        answer = self.cloud.request("POST", "/v1/relay", json={"requests": [self._body(row) for row in rows]})
        now = time.time()
        if answer.status_code == 202:
            with self.store.transaction() as conn:
                for row, accepted in zip(rows, answer.json()["requests"]):
                    conn.execute("UPDATE requests SET status = 'relayed', relay_id = ?, updated_at = ? WHERE id = ? AND status = 'queued'", (accepted["id"], now, row["id"]))
            return True
        error = _error_of(answer)
        if answer.status_code == 422 and error.get("code") == "invalid_requests":
            refused = {detail["row"]: detail for detail in error.get("details") or []}
            with self.store.transaction() as conn:
                for number, row in enumerate(rows, start=1):
                    detail = refused.get(number)
                    if detail is None:
                        continue  # not refused, but not accepted either (the whole post was): posted again as it is
                    if detail["code"] == "nonce_used":  # the cloud holds no request of this digest: signed again
                        conn.execute("UPDATE requests SET nonce = NULL, signature = NULL, posted = 0, updated_at = ? WHERE id = ?", (now, row["id"]))
                    else:
                        self._fail(conn, row, {"code": detail["code"], "message": detail["message"]}, now)
            log.warning("the cloud refused %d of %d request(s): %s", len(refused), len(rows), error.get("message"))
            self._resync_wanted = True
            return True
        raise LinkDown(f"the cloud answered HTTP {answer.status_code} to POST /v1/relay: {error.get('code')}: {error.get('message')}")

    def follow(self) -> bool:
        """The cloud's verdict on the requests it holds: confirmed, or failed with the decoded contract error. Asked
        in nonce order (the order the chain settles them in), FOLLOW_AT_ONCE at a time, up to the first that is still
        undecided; the verdicts of a pass are written in one SQL transaction."""
        rows = self.store.query("SELECT * FROM requests WHERE status = 'relayed' ORDER BY nonce LIMIT ?", (FOLLOW_PER_PASS,))
        if not rows:
            return False
        verdicts: list[tuple[Any, httpx.Response]] = []
        for start in range(0, len(rows), FOLLOW_AT_ONCE):
            chunk = rows[start : start + FOLLOW_AT_ONCE]
            answers = list(self._pool.map(lambda row: self.cloud.request("GET", f"/v1/relay/{row['relay_id']}"), chunk))
            verdicts += zip(chunk, answers)
            if any(answer.status_code == 200 and answer.json()["status"] not in ("confirmed", "failed") for answer in answers):
                break  # the cloud is still at work on these: the later ones wait for the next pass
        now = time.time()
        progressed = False
        with self.store.transaction() as conn:
            for row, answer in verdicts:
                if answer.status_code == 404:  # the cloud lost it (restored from a backup): posted again as it is
                    conn.execute("UPDATE requests SET status = 'queued', relay_id = NULL, updated_at = ? WHERE id = ?", (now, row["id"]))
                    progressed = True
                    continue
                if answer.status_code != 200:
                    raise LinkDown(f"the cloud answered HTTP {answer.status_code} to GET /v1/relay/{row['relay_id']}")
                verdict = answer.json()
                if verdict["status"] == "confirmed":
                    conn.execute("UPDATE requests SET status = 'confirmed', tx_hash = ?, block = ?, updated_at = ? WHERE id = ?", (verdict["tx_hash"], verdict["block"], now, row["id"]))
                    progressed = True
                elif verdict["status"] == "failed":
                    conn.execute("UPDATE requests SET tx_hash = ?, block = ? WHERE id = ?", (verdict.get("tx_hash"), verdict.get("block"), row["id"]))
                    self._fail(conn, row, verdict.get("error") or {}, now)
                    progressed = True
        return progressed

    # --- helpers ----------------------------------------------------------------------------------------------

    def _fail(self, conn: Any, row: Any, reason: dict[str, Any], now: float) -> None:
        """A request settled without effect. A filler that failed as it should on chain (part 0 is unknown: its nonce
        is used) did its job: confirmed."""
        state = "confirmed" if row["kind"] == FILLER and reason.get("error") == FILLER_ERROR else "failed"
        conn.execute("UPDATE requests SET status = ?, reason = ?, updated_at = ? WHERE id = ?", (state, json.dumps(reason), now, row["id"]))
        if state == "failed":
            log.warning("request %s (%s, nonce %s) failed: %s", row["id"], row["kind"], row["nonce"], reason)
            self._resync_wanted = True
            self.rebuild_view()

    def _insert_filler(self, conn: Any, nonce: int, domain: Eip712Domain) -> None:
        now = time.time()
        request_id = str(uuid.uuid4())
        data = calldata("PartLedger", "receiveParts", [[ZERO32], ZERO32])
        conn.execute(
            "INSERT INTO requests (id, kind, payload, parts, target, data, gas, status, created_at, updated_at) VALUES (?, ?, '{}', '[]', ?, ?, ?, 'queued', ?, ?)",
            (request_id, FILLER, self.config.part_ledger, bytes.fromhex(data[2:]), 100_000, now, now),
        )  # fmt: skip
        self._sign(conn, request_id, nonce, domain)
        log.warning("nonce %d held by no live request: a filler %s uses it so that later requests run", nonce, request_id)

    def _sign(self, conn: Any, request_id: str, nonce: int, domain: Eip712Domain) -> None:
        from eth_account.messages import encode_typed_data

        row = conn.execute("SELECT target, gas, data FROM requests WHERE id = ?", (request_id,)).fetchone()
        deadline = int(time.time()) + self.config.deadline_seconds
        request = ForwardRequest(sender=self.signer, to=row["target"], value=0, gas=row["gas"], nonce=nonce, deadline=deadline, data=bytes(row["data"]))
        signature = bytes(self.key.sign_message(encode_typed_data(full_message=forward_request_typed_data(domain, request))).signature)
        conn.execute("UPDATE requests SET nonce = ?, deadline = ?, signature = ?, updated_at = ? WHERE id = ?", (nonce, deadline, signature, time.time(), request_id))

    def _body(self, row: Any) -> dict[str, Any]:
        return {
            "from": self.signer, "to": row["target"], "value": 0, "gas": row["gas"], "nonce": row["nonce"], "deadline": row["deadline"],
            "data": "0x" + bytes(row["data"]).hex(), "signature": "0x" + bytes(row["signature"]).hex(),
        }  # fmt: skip

    def _domain(self) -> Eip712Domain | None:
        known = self.store.get("domain")
        return Eip712Domain(**known) if known else None

    def _set_link(self, state: str) -> None:
        if self.store.get("link") != state:
            with self.store.transaction() as conn:
                self.store.put(conn, "link", state)


# --- what each local operation is ---------------------------------------------------------------------------


def normalise_part_id(value: str) -> str:
    text = value.lower().removeprefix("0x") if isinstance(value, str) else ""
    if len(text) != 64 or any(char not in "0123456789abcdef" for char in text):
        raise Refusal(422, "invalid_part_id", f"a part id is 0x followed by 64 hex digits, not {str(value)[:80]!r}")
    return "0x" + text


def _check(kind: str, part: str, view: dict[str, Any] | None, org_id: int, payload: dict[str, Any]) -> None:
    """Refuses (409) what the site's view says the chain would refuse."""
    if kind == "receive":
        if view is None or view["status"] != "in_transit" or view["recipient"] != org_id:
            raise Refusal(409, "part_not_inbound", f"part {part} is not in transit to this site")
        return
    if view is None or view["status"] != "in_stock" or view["custodian"] != org_id:
        raise Refusal(409, "part_not_in_stock", f"part {part} is not in stock at this site")
    if kind == "install" and view["recalled"]:
        raise Refusal(409, "part_recalled", f"part {part} is of a recalled lot: it may not be installed")
    if kind == "ship" and payload["to"] == org_id:
        raise Refusal(422, "ship_to_self", "a site does not ship to its own organisation")


def _effect(kind: str, view: dict[str, Any] | None, org_id: int | None, payload: dict[str, Any]) -> dict[str, Any]:
    """The part as the site will see it once the request lands."""
    base = dict(view or {"status": "in_transit", "custodian": None, "recipient": org_id, "recalled": False})
    if kind == "receive":
        return {**base, "status": "in_stock", "custodian": org_id, "recipient": None}
    if kind == "install":
        return {**base, "status": "installed"}
    if kind == "ship":
        return {**base, "status": "in_transit", "recipient": payload["to"]}
    return base


def _call_data(kind: str, part_ids: list[str], payload: dict[str, Any]) -> bytes:
    ids = [bytes.fromhex(part[2:]) for part in part_ids]
    doc = bytes.fromhex(payload.get("doc_hash", "0x" + "00" * 32)[2:])
    if kind == "receive":
        data = calldata("PartLedger", "receiveParts", [ids, doc])
    elif kind == "install":
        data = calldata("PartLedger", "installParts", [ids, [bytes.fromhex(vin[2:]) for vin in payload["vin_hashes"]], doc])
    elif kind == "ship":
        data = calldata("PartLedger", "shipParts", [ids, payload["to"], doc])
    else:
        raise ValueError(kind)
    return bytes.fromhex(data[2:])


def _gas(kind: str, parts: int) -> int:
    """What a request offers its call, never estimated here (the site may be offline): the bulk operations cost under
    9,000 gas per part (README, Gas), so this leaves room, and 200 parts stay under the relay's 5,000,000 per request."""
    return 100_000 + 15_000 * parts


def _error_of(answer: httpx.Response) -> dict[str, Any]:
    try:
        error = answer.json().get("error")
    except ValueError:
        return {"code": None, "message": answer.text[:200]}
    return error if isinstance(error, dict) else {"code": None, "message": str(error)[:200]}
