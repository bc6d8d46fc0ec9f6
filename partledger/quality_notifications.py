"""Quality notifications as records anyone can check: the state machine, and how a transition is hashed and batched.

Shared core: the service (ledger_service.notifications) records transitions with it, and the offline verifier
(partledger.proofs.verifier) checks them with it; it imports nothing but the standard library and keccak.

A notification is an investigation (upstream, to suppliers) or an alert (downstream, to customers). Each recipient
organisation has its own state, moved by one organisation at a time:

    create       (none)                -> created       the initiator
    send         created               -> sent          the initiator
    receive      sent                  -> received      the recipient
    acknowledge  received              -> acknowledged  the recipient
    accept       acknowledged          -> accepted      the recipient
    decline      acknowledged          -> declined      the recipient
    close        accepted | declined   -> closed        the initiator

Every transition is a JSON object (format TRANSITION_FORMAT) naming the notification, its content hash, the action,
both states, the acting and receiving organisations, the time, the message, the attachments (their keccak-256 only)
and, for an acknowledgement of an alert, the affected parts the recipient still holds and those it installed. Its
hash is keccak256 of its canonical JSON (CANONICAL_FORM); its leaf in the acting organisation's batch (kind
NOTIFICATION_BATCH_KIND, anchored by that organisation's site key) holds the values RECORD_TYPES name.
"""

from __future__ import annotations

import json
from typing import Any

from eth_hash.auto import keccak

NOTIFICATION_BATCH_KIND = "notification"
TRANSITION_FORMAT = "partledger-notification-transition/1"
CONTENT_FORMAT = "partledger-notification/1"
# transition hash, notification id, acting organisation, recipient organisation, state reached, time (unix ms)
RECORD_TYPES = ["bytes32", "string", "uint32", "uint32", "string", "uint64"]
CANONICAL_FORM = "UTF-8 JSON, keys sorted, no whitespace (RFC 8785 for objects of strings, integers, booleans, null and lists)"

KINDS = ("investigation", "alert")
SEVERITIES = ("minor", "major", "critical", "life_threatening")
STATES = ("created", "sent", "received", "acknowledged", "accepted", "declined", "closed")
# action -> (the states it starts from, the state it reaches, who acts: "initiator" or "recipient")
TRANSITIONS: dict[str, tuple[tuple[str | None, ...], str, str]] = {
    "create": ((None,), "created", "initiator"),
    "send": (("created",), "sent", "initiator"),
    "receive": (("sent",), "received", "recipient"),
    "acknowledge": (("received",), "acknowledged", "recipient"),
    "accept": (("acknowledged",), "accepted", "recipient"),
    "decline": (("acknowledged",), "declined", "recipient"),
    "close": (("accepted", "declined"), "closed", "initiator"),
}
ACTIONS = tuple(TRANSITIONS)


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value (CANONICAL_FORM); floats are refused (times are integers)."""
    _refuse_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("a notification record holds no floating-point number")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item)


def record_hash(value: Any) -> bytes:
    """keccak256 of the canonical JSON of a transition or of a notification's content."""
    return keccak(canonical_json(value))


def record_values(transition: dict[str, Any]) -> list[Any]:
    """A transition's leaf values (RECORD_TYPES), as a bundle lists them (hex bytes)."""
    return [
        "0x" + record_hash(transition).hex(), transition["notification"], transition["actor"], transition["recipient"],
        transition["state"], transition["atMillis"],
    ]  # fmt: skip


def transition_problem(transition: dict[str, Any]) -> str | None:
    """What makes a transition impossible in the state machine (None when it is a legal one): an unknown action, a
    state it cannot start from or reach, or an actor who may not take it."""
    rule = TRANSITIONS.get(transition.get("action"))  # type: ignore[arg-type]
    if rule is None:
        return f"{transition.get('action')!r} is not a notification action"
    starts, reaches, who = rule
    if transition.get("from") not in starts or transition.get("state") != reaches:
        return f"{transition['action']} goes from {' or '.join(str(s) for s in starts)} to {reaches}, not from {transition.get('from')} to {transition.get('state')}"
    if transition.get("actor") != transition.get(who):
        return f"{transition['action']} is taken by the {who} (organisation {transition.get(who)}), not by organisation {transition.get('actor')}"
    return None
