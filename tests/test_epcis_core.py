"""partledger.epcis, pure: the CBV 2.0 event hash against every published vector, identifiers in URN and Digital
Link form, CBV words, and GS1's EPCIS 2.0 schema over GS1's examples. Vectors are read from ../shared/vectors."""

from __future__ import annotations

import copy
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from partledger.epcis import hashing, schema, vocabulary
from partledger.epcis.hashing import document_event_hashes, event_hash, event_prehash, hash_digest
from partledger.epcis.identifiers import (
    epc_key,
    lgtin_uri,
    location_uri,
    parse_epc,
    party_uri,
    sgtin_uri,
    sgtin_urn,
    to_urn,
)
from partledger.epcis.schema import SchemaProblem, validate_document, validate_event
from partledger.errors import ValidationError
from tests.vectors import vectors_dir

VECTORS = vectors_dir() / "epcis"
EXAMPLES = VECTORS / "examples"
HASHES = json.loads((VECTORS / "hashes.json").read_text())
DOCUMENTS = sorted(EXAMPLES.rglob("*.jsonld"))
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]


@cache
def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def load(name: str | Path) -> dict[str, Any]:
    """A fresh copy of an example document (tests may edit it)."""
    return copy.deepcopy(_load(EXAMPLES / name))


def simple_event(**fields: Any) -> dict[str, Any]:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2024-05-01T12:00:00.000+02:00",
        "eventTimeZoneOffset": "+02:00",
        "epcList": ["urn:epc:id:sgtin:4012345.011111.987"],
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00011.0"},
    }
    event.update(fields)
    return event


def test_vectors_and_examples_are_where_the_tests_expect():
    assert len(HASHES) == 35
    assert len(DOCUMENTS) == 31


# --- the event hash ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", HASHES, ids=[f"{v['file']}#{v['event_index']}" for v in HASHES])
def test_event_hash_equals_the_published_vector(vector):
    document = load(vector["file"])
    event = hashing.document_events(document)[vector["event_index"]]
    assert event_hash(event, context=document.get("@context")) == vector["hash"]
    assert document_event_hashes(document)[vector["event_index"]] == vector["hash"]


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_document_event_hashes_hashes_every_event_of_every_gs1_example(path):
    document = load(path)
    hashes = document_event_hashes(document)
    assert len(hashes) == len(hashing.document_events(document)) > 0
    for ni in hashes:
        assert ni.startswith("ni:///sha-256;") and ni.endswith("?ver=CBV2.0")
        assert len(hash_digest(ni)) == 32


def test_no_two_example_events_share_a_hash():
    hashes = [ni for path in DOCUMENTS for ni in document_event_hashes(load(path))]
    assert len(set(hashes)) == len(hashes)


def test_nested_extension_objects_are_hashed_per_the_standard():
    # the reference implementation crashes on this document (term definitions in @context, nested objects)
    document = load("Example-TransactionEvents-2020_07_03y.jsonld")
    context = document["@context"]
    event = document["epcisBody"]["eventList"][1]
    prehash = event_prehash(event, context=context)
    rail = "{urn:gs1:epcisapp:rail:}"
    assert f"{rail}vehicle{rail}vehicleAxleCount=4{rail}vehicleMasterGIAI=https://id.gs1.org/8004/735005385vehicle1" in prehash
    assert prehash.endswith(f"{rail}vehiclePosition=2{rail}vehicleUniquelyIdentified=false")
    reordered = copy.deepcopy(event)
    reordered["rail:vehicle"].reverse()
    reordered["rail:vehicle"][0] = dict(reversed(list(reordered["rail:vehicle"][0].items())))
    assert event_hash(reordered, context=context) == event_hash(event, context=context)
    changed = copy.deepcopy(event)
    changed["rail:vehicle"][1]["rail:vehicleAxleCount"] = "6"
    assert event_hash(changed, context=context) != event_hash(event, context=context)


def test_event_hash_ignores_json_key_order_and_list_order():
    event = simple_event(epcList=["urn:epc:id:sgtin:4012345.011111.1", "urn:epc:id:sgtin:4012345.011111.2"],
                         bizTransactionList=[{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:1"},
                                             {"bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:2", "type": "inv"}])  # fmt: skip
    shuffled = dict(reversed(list(copy.deepcopy(event).items())))
    shuffled["epcList"].reverse()
    shuffled["bizTransactionList"].reverse()
    shuffled["bizTransactionList"][1] = {"bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:1", "type": "po"}
    assert event_hash(shuffled, context=CONTEXT) == event_hash(event, context=CONTEXT)


def test_urn_and_digital_link_forms_of_an_event_hash_alike():
    urn = simple_event(readPoint={"id": "urn:epc:id:sgln:4012345.00011.0"})
    dl = simple_event(epcList=["https://example.com/resolver/01/04012345111118/21/987?sig=abc"],
                      readPoint={"id": "https://id.gs1.org/414/4012345000115"})  # fmt: skip
    assert event_hash(urn) == event_hash(dl)


@pytest.mark.parametrize(
    "biz_step",
    ["shipping", "https://ref.gs1.org/cbv/BizStep-shipping", "cbv:BizStep-shipping", "urn:epcglobal:cbv:bizstep:shipping"],
)
def test_every_form_of_a_cbv_word_hashes_alike(biz_step):
    assert event_hash(simple_event(bizStep=biz_step)) == event_hash(simple_event())


def test_event_hash_leaves_out_event_id_record_time_and_error_declaration():
    plain = event_hash(simple_event())
    decorated = simple_event(eventID="urn:uuid:7b0bb8a6-2d6f-4a54-8f3e-3f0c1a2b3c4d", recordTime="2024-05-02T00:00:00Z",
                             errorDeclaration={"declarationTime": "2024-05-03T00:00:00Z", "reason": "incorrect_data"})  # fmt: skip
    assert event_hash(decorated) == plain
    assert event_hash(simple_event(action="ADD")) != plain


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("2023-02-02T11:04:03.1415Z", "2023-02-02T11:04:03.142Z"),
        ("2023-02-02T11:04:03.1414Z", "2023-02-02T11:04:03.141Z"),
        ("2023-02-02T11:04:03.1425Z", "2023-02-02T11:04:03.143Z"),  # 5-9 rounds up (the reference: half to even)
        ("2023-12-31T23:59:59.9996Z", "2024-01-01T00:00:00.000Z"),  # the carry reaches the year
        ("2023-01-11T12:00:00+01:00", "2023-01-11T11:00:00.000Z"),
        ("2005-04-03T20:33:31.116000-06:00", "2005-04-04T02:33:31.116Z"),
        ("2023-01-11T12:00:00", "2023-01-11T12:00:00.000Z"),  # no offset: read as UTC
    ],
)
def test_timestamps_are_written_in_utc_with_milliseconds(written, canonical):
    assert f"eventTime={canonical}eventTimeZoneOffset" in event_prehash(simple_event(eventTime=written))


def test_values_that_only_look_like_timestamps_are_kept_as_written():
    assert "eventTime=0001-01-01T00:00:00+01:00eventTimeZoneOffset" in event_prehash(simple_event(eventTime="0001-01-01T00:00:00+01:00"))
    assert "eventTime=yesterdayeventTimeZoneOffset" in event_prehash(simple_event(eventTime="yesterday"))


def test_event_hash_refuses_an_event_nested_beyond_reason():
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(5000):
        inner["example:x"] = {}
        inner = inner["example:x"]
    with pytest.raises(ValidationError) as raised:
        event_hash(simple_event(**{"example:deep": nested}))
    assert raised.value.code == "invalid_event"
    lists: list = []
    for _ in range(5000):
        lists = [lists]
    with pytest.raises(ValidationError) as raised:
        event_hash(simple_event(**{"example:deep": lists}))
    assert raised.value.code == "invalid_event"


def test_simple_events_take_a_shortcut_that_writes_what_the_tree_walk_writes():
    rng = random.Random(7)
    compared = with_ilmd = 0
    for path in DOCUMENTS:
        document = _load(path)
        prefixes = hashing._prefixes(document.get("@context"))
        for event in hashing.document_events(document):
            simple = {key: value for key, value in event.items() if key in hashing._SIMPLE_KEYS}
            variants = [event, simple]
            for _ in range(10):
                variant = copy.deepcopy(simple)
                for key in list(variant):
                    roll = rng.random()
                    if roll < 0.15:
                        del variant[key]
                    elif roll < 0.25 and isinstance(variant[key], list):
                        variant[key] = []
                    elif roll < 0.3 and isinstance(variant[key], str):
                        variant[key] = " "
                    elif roll < 0.4 and isinstance(variant[key], list) and variant[key] and isinstance(variant[key][0], dict):
                        variant[key] = [{k: v for k, v in item.items() if k != "type"} for item in variant[key]]
                variants.append(variant)
            for _ in range(3):  # instance/lot master data: scalars of every kind, prefixed or not, and shapes the shortcut leaves
                fields = rng.sample(ILMD_FIELDS, rng.randint(0, 4))
                variants.append(copy.deepcopy(simple) | {"ilmd": dict(fields)})
            for variant in variants:
                shortcut = hashing._simple_prehash(variant, prefixes)
                if shortcut is not None:
                    assert shortcut == hashing._Prehasher(prefixes, variant).prehash()
                    compared += 1
                    with_ilmd += "ilmd" in variant
    assert compared > 300
    assert with_ilmd > 100


ILMD_FIELDS = [
    ("cbvmda:lotNumber", "LOT-7"), ("cbvmda:itemExpirationDate", "2026-01-01"), ("cbvmda:bestBeforeDate", " 2026-02-01T00:00:00Z "),
    ("example:grade", "shipping"), ("example:count", 3), ("example:ratio", 2.50), ("example:checked", True), ("plain", "x"),
    ("example:blank", " "), ("example:none", None), ("@id", "urn:x"), ("rdfs:comment", "kept out"), ("example:code", "cbv:BizStep-shipping"),
    ("example:id", "urn:epc:id:sgtin:4012345.011111.987"), ("example:nested", {"example:a": "1"}), ("example:values", ["1", "2"]),
    ("example:partList", "x"), ("inputEPC", "y"), ("source", "z"), ("#text", "t"),
]  # fmt: skip


@pytest.mark.parametrize("ni", ["", "sha256:abc", "ni:///sha-256;abcd?ver=CBV2.0", "ni:///sha-256;" + "zz" * 32])
def test_hash_digest_refuses_what_is_not_an_event_hash(ni):
    with pytest.raises(ValidationError) as raised:
        hash_digest(ni)
    assert raised.value.code == "invalid_event_hash"


def test_event_hash_refuses_what_is_not_an_event():
    with pytest.raises(ValidationError) as raised:
        event_hash(["not", "an", "event"])  # type: ignore[arg-type]
    assert raised.value.code == "invalid_event"


def test_document_event_hashes_refuses_a_document_without_events():
    with pytest.raises(ValidationError) as raised:
        document_event_hashes({"type": "EPCISDocument"})
    assert raised.value.code == "invalid_document"


# --- identifiers ------------------------------------------------------------------------------------------------


def _named_epcs(document: dict[str, Any]) -> list[str]:
    found = []
    for event in document["epcisBody"]["eventList"]:
        found += [event["parentID"]] if "parentID" in event else []
        found += event.get("epcList", []) + event.get("childEPCs", [])
        found += [quantity["epcClass"] for quantity in event.get("childQuantityList", [])]
        found += [event[field]["id"] for field in ("readPoint", "bizLocation") if field in event]
    return found


# GS1's Digital Link examples give the SGTINs urn:epc:id:sgtin:0614141.107346.* as GTIN 70614141123451, which is
# not their translation (indicator 1, item reference 07346: GTIN 10614141073464, as the reference normaliser and
# the hash vectors say). Every other EPC of the pairs translates exactly.
GS1_EXAMPLE_GTIN_MISMATCH = ("10614141073464", "70614141123451")


@pytest.mark.parametrize(
    ("urn_file", "dl_file"),
    [
        ("Example_9.6.1-ObjectEvent.jsonld", "Example_9.6.1-ObjectEventWithDigitalLink.jsonld"),
        ("Example_9.6.3-AggregationEvent.jsonld", "Example_9.6.3-AggregationEventWithDigitalLink.jsonld"),
    ],
)
def test_gs1_examples_name_the_same_epcs_in_urn_and_digital_link_form(urn_file, dl_file):
    urn_epcs, dl_epcs = _named_epcs(load(urn_file)), _named_epcs(load(dl_file))
    assert len(urn_epcs) == len(dl_epcs) > 0
    for urn, dl in zip(urn_epcs, dl_epcs):
        from_urn, from_dl = parse_epc(urn), parse_epc(dl)
        assert from_urn.kind == from_dl.kind != "other"
        if (from_urn.gtin, from_dl.gtin) == GS1_EXAMPLE_GTIN_MISMATCH:
            assert from_urn.serial == from_dl.serial
            assert epc_key(urn) == epc_key(dl.replace(GS1_EXAMPLE_GTIN_MISMATCH[1], GS1_EXAMPLE_GTIN_MISMATCH[0]))
        else:
            assert from_urn.key == from_dl.key


@pytest.mark.parametrize(
    ("uri", "kind", "fields", "key"),
    [
        ("urn:epc:id:sgtin:0614141.107346.2017", "sgtin", {"gtin": "10614141073464", "serial": "2017"},
         "https://id.gs1.org/01/10614141073464/21/2017"),
        ("https://id.gs1.org/01/10614141073464/21/2017", "sgtin", {"gtin": "10614141073464", "serial": "2017"},
         "https://id.gs1.org/01/10614141073464/21/2017"),
        ("https://scan.example.com/p/01/10614141073464/10/L1/21/2017?sig=x#top", "sgtin",
         {"gtin": "10614141073464", "serial": "2017", "lot": "L1"}, "https://id.gs1.org/01/10614141073464/21/2017"),
        ("https://example.com/01/4012345111118/21/A%2FB", "sgtin", {"gtin": "04012345111118", "serial": "A/B"},
         "https://id.gs1.org/01/04012345111118/21/A%2FB"),
        ("urn:epc:id:sgtin:4012345.011111.A%2FB", "sgtin", {"gtin": "04012345111118", "serial": "A/B"},
         "https://id.gs1.org/01/04012345111118/21/A%2FB"),
        ("urn:epc:class:lgtin:4012345.012345.998877", "lgtin", {"gtin": "04012345123456", "lot": "998877"},
         "https://id.gs1.org/01/04012345123456/10/998877"),
        ("urn:epc:idpat:sgtin:4012345.098765.*", "sgtin_pattern", {"gtin": "04012345987652", "serial": None},
         "https://id.gs1.org/01/04012345987652"),
        ("https://id.gs1.org/01/04012345987652", "sgtin_pattern", {"gtin": "04012345987652"},
         "https://id.gs1.org/01/04012345987652"),
        ("urn:epc:id:sscc:0614141.1234567890", "sscc", {"sscc": "106141412345678908"},
         "https://id.gs1.org/00/106141412345678908"),
        ("urn:epc:id:sgln:0614141.07346.1234", "sgln", {"gln": "0614141073467", "extension": "1234"},
         "https://id.gs1.org/414/0614141073467/254/1234"),
        ("urn:epc:id:sgln:0012345.11111.0", "sgln", {"gln": "0012345111112", "extension": None},
         "https://id.gs1.org/414/0012345111112"),
        ("https://id.gs1.org/414/0012345111112/254/0", "sgln", {"gln": "0012345111112", "extension": None},
         "https://id.gs1.org/414/0012345111112"),
        ("urn:epc:id:pgln:4000001.98765", "pgln", {"gln": "4000001987658"}, "https://id.gs1.org/417/4000001987658"),
        ("https://id.gs1.org/417/4000001987658", "pgln", {"gln": "4000001987658"}, "https://id.gs1.org/417/4000001987658"),
        ("urn:epc:id:grai:4012345.55555.1234", "other", {}, "urn:epc:id:grai:4012345.55555.1234"),
        ("https://example.com/po/12345678", "other", {}, "https://example.com/po/12345678"),
        ("urn:uuid:0d2a7a0c-6a6e-4f7e-9c44-2c3d8f6b1a10", "other", {}, "urn:uuid:0d2a7a0c-6a6e-4f7e-9c44-2c3d8f6b1a10"),
    ],
)  # fmt: skip
def test_parse_epc_reads_both_forms(uri, kind, fields, key):
    epc = parse_epc(uri)
    assert epc.kind == kind
    assert epc.key == key == epc_key(uri)
    for name, value in fields.items():
        assert getattr(epc, name) == value


@pytest.mark.parametrize(
    "uri",
    [
        "urn:epc:id:sgtin:0614141.107346",  # no serial
        "urn:epc:id:sgtin:0614141.1073460.2017",  # 14 digits of prefix and item reference
        "urn:epc:id:sgtin:0614141.107346.20 17",  # a space
        "urn:epc:id:sgtin:0614141.107346." + "9" * 21,  # serial too long
        "urn:epc:id:sscc:0614141.123456789",
        "urn:epc:id:sgln:0614141.07346",
        "https://id.gs1.org/01/10614141073465/21/2017",  # check digit
        "https://id.gs1.org/01/1061414107346/21/2017",  # 13 digits that fail the check
        "https://id.gs1.org/01/10614141073464/21/20%ZZ",  # a bare %
        "https://id.gs1.org/01/10614141073464/21/%C3%A9",  # not GS1 characters
        "https://id.gs1.org/01/10614141073464/21/2017/10/L1",  # lot after serial
        "https://id.gs1.org/01/10614141073464/17/251231",  # not a key qualifier of 01
        "https://id.gs1.org/01/10614141073464/21",  # AI without value
        "https://id.gs1.org/00/10614141234567890",
        "https://id.gs1.org/414/0614141073468",
    ],
)
def test_parse_epc_refuses_malformed_gs1_keys(uri):
    with pytest.raises(ValidationError) as raised:
        parse_epc(uri)
    assert raised.value.code == "invalid_epc"


def test_identifier_builders_write_canonical_digital_links_and_urns():
    assert sgtin_uri("04012345111118", "987") == "https://id.gs1.org/01/04012345111118/21/987"
    assert sgtin_uri("4012345111118", "A/B") == "https://id.gs1.org/01/04012345111118/21/A%2FB"
    assert lgtin_uri("04012345123456", "998877") == "https://id.gs1.org/01/04012345123456/10/998877"
    assert party_uri("4000001987658") == "https://id.gs1.org/417/4000001987658"
    assert location_uri("0614141073467") == "https://id.gs1.org/414/0614141073467"
    assert location_uri("0614141073467", "1234") == "https://id.gs1.org/414/0614141073467/254/1234"
    assert sgtin_urn("10614141073464", "2017", company_prefix_length=7) == "urn:epc:id:sgtin:0614141.107346.2017"
    assert sgtin_urn("04012345111118", "A/B", company_prefix_length=7) == "urn:epc:id:sgtin:4012345.011111.A%2FB"
    with pytest.raises(ValidationError) as raised:
        sgtin_uri("04012345111119", "987")
    assert raised.value.code == "invalid_epc"
    with pytest.raises(ValidationError) as raised:
        sgtin_uri("04012345111118", "é")
    assert raised.value.code == "invalid_epc"


@pytest.mark.parametrize(
    ("uri", "length"),
    [
        ("urn:epc:id:sgtin:0614141.107346.2017", 7),
        ("urn:epc:id:sgtin:4012345.011111.A%2FB", 7),
        ("urn:epc:class:lgtin:4012345.012345.998877", 7),
        ("urn:epc:idpat:sgtin:4012345.098765.*", 7),
        ("urn:epc:id:sscc:0614141.1234567890", 7),
        ("urn:epc:id:sgln:0614141.07346.1234", 7),
        ("urn:epc:id:sgln:0012345.11111.0", 7),
        ("urn:epc:id:pgln:4000001.98765", 7),
        ("urn:epc:id:sgtin:061414112.1234.77", 9),
    ],
)
def test_to_urn_inverts_the_digital_link_form(uri, length):
    digital_link = epc_key(uri)
    assert to_urn(digital_link, company_prefix_length=length) == uri
    assert to_urn(uri, company_prefix_length=length) == uri


def test_to_urn_refuses_an_impossible_company_prefix_length_and_keeps_other_uris():
    with pytest.raises(ValidationError) as raised:
        to_urn("https://id.gs1.org/01/04012345111118/21/987", company_prefix_length=5)
    assert raised.value.code == "invalid_epc"
    assert to_urn("urn:uuid:1", company_prefix_length=7) == "urn:uuid:1"


# --- vocabulary -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("urn:epcglobal:cbv:bizstep:shipping", "shipping"),
        ("https://ref.gs1.org/cbv/BizStep-shipping", "shipping"),
        ("cbv:BizStep-shipping", "shipping"),
        ("shipping", "shipping"),
        ("urn:epcglobal:cbv:disp:in_transit", "in_transit"),
        ("https://ref.gs1.org/cbv/Disp-recalled", "recalled"),
        ("cbv:Disp-recalled", "recalled"),
        ("https://ref.gs1.org/cbv/BTT-po", "po"),
        ("urn:epcglobal:cbv:sdt:owning_party", "owning_party"),
        ("epcis:ObjectEvent", "ObjectEvent"),
        ("https://ref.gs1.org/epcis/AggregationEvent", "AggregationEvent"),
        ("ADD", "ADD"),
        ("http://epcis.example.org/hc/bizstep/summarising_discharge", "http://epcis.example.org/hc/bizstep/summarising_discharge"),
        ("urn:example:bizstep:x", "urn:example:bizstep:x"),
    ],
)  # fmt: skip
def test_bare_word_folds_every_written_form(value, word):
    assert vocabulary.bare_word(value) == word


def test_word_lists_are_cbv_2_0():
    assert {"commissioning", "shipping", "receiving", "installing", "removing", "retail_selling", "destroying",
            "sensor_reporting", "sampling"} <= vocabulary.BIZ_STEPS  # fmt: skip
    assert {"recalled", "in_transit", "needs_replacement"} <= vocabulary.DISPOSITIONS
    assert len(vocabulary.BIZ_STEPS) == 41 and len(vocabulary.DISPOSITIONS) == 33
    assert vocabulary.is_bizstep("urn:epcglobal:cbv:bizstep:installing") and not vocabulary.is_bizstep("flying")
    assert vocabulary.bizstep_uri("shipping") == "https://ref.gs1.org/cbv/BizStep-shipping"
    assert vocabulary.disposition_uri("recalled") == "https://ref.gs1.org/cbv/Disp-recalled"


# --- schema -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_every_gs1_example_document_is_valid(path):
    assert validate_document(load(path)) == []


def test_the_sensor_report_patch_is_what_lets_sensor_data_example_8_pass():
    import jsonschema_rs

    unpatched = jsonschema_rs.Draft7Validator(json.loads(schema.SCHEMA_PATH.read_text()), validate_formats=True)
    errors = list(unpatched.iter_errors(load("SensorDataExample8.jsonld")))
    assert [list(error.instance_path) for error in errors] == [
        ["epcisBody", "eventList", 0, "sensorElementList", 2, "sensorReport", 0]
    ]
    assert [name for name, _ in schema.SCHEMA_PATCHES] == ["sensorReport.bizRules"]


def test_schema_reports_a_missing_event_time_on_its_event():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    del document["epcisBody"]["eventList"][1]["eventTime"]
    assert validate_document(document) == [
        SchemaProblem(1, "/epcisBody/eventList/1", '"eventTime" is a required property')
    ]


def test_schema_reports_an_unknown_action_on_its_event():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    document["epcisBody"]["eventList"][0]["action"] = "UPDATE"
    assert validate_document(document) == [
        SchemaProblem(0, "/epcisBody/eventList/0/action", '"UPDATE" is not one of "OBSERVE", "ADD" or "DELETE"')
    ]


@pytest.mark.parametrize("context", [["https://example.com/epcis-context.jsonld"], {"example": "http://ns.example.com/epcis/"}])
def test_schema_refuses_a_document_without_the_epcis_context(context):
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    document["@context"] = context
    problems = validate_document(document)
    assert SchemaProblem(None, "/@context",
                         f"@context must include the EPCIS 2.0 context {schema.EPCIS_CONTEXT}") in problems  # fmt: skip
    assert all(problem.event_index is None for problem in problems)


def test_schema_accepts_the_known_aliases_of_the_epcis_context():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    document["@context"] = "https://gs1.github.io/EPCIS/epcis-context.jsonld"
    assert validate_document(document) == []


def test_schema_names_an_unknown_cbv_word_and_lets_uris_pass():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    document["epcisBody"]["eventList"][0]["bizStep"] = "teleporting"
    document["epcisBody"]["eventList"][1]["disposition"] = "https://example.com/disp/quarantined"
    document["epcisBody"]["eventList"][1]["persistentDisposition"] = {"set": ["sticky"]}
    assert validate_document(document) == [
        SchemaProblem(0, "/epcisBody/eventList/0/bizStep", "unknown CBV bizStep 'teleporting'"),
        SchemaProblem(1, "/epcisBody/eventList/1/persistentDisposition/set/0", "unknown CBV disposition 'sticky'"),
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not an EPCISDocument: the body must be a JSON object"),
        ("EPCISDocument", "not an EPCISDocument: the body must be a JSON object"),
        ({"type": "EPCISQueryDocument", "epcisBody": {}}, "not an EPCISDocument: type is 'EPCISQueryDocument'"),
        (simple_event(**{"@context": CONTEXT}), "not an EPCISDocument: type is 'ObjectEvent'"),
        ({"epcisBody": {"eventList": []}}, "not an EPCISDocument: type is None"),
    ],
)
def test_schema_refuses_what_is_not_an_epcis_document(document, message):
    problems = validate_document(document)
    assert [problem.message for problem in problems] == [message]
    assert problems[0].event_index is None


def test_schema_reports_document_level_problems_without_an_event_index():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    del document["creationDate"]
    assert validate_document(document) == [SchemaProblem(None, "", '"creationDate" is a required property')]


def test_validate_event_points_into_the_event_itself():
    event = simple_event(action="UPDATE")
    assert validate_event(event, CONTEXT) == [SchemaProblem(0, "/action", '"UPDATE" is not one of "OBSERVE", "ADD" or "DELETE"')]
    assert validate_event(simple_event(**{"@context": CONTEXT})) == []
    assert validate_event(simple_event(), ["https://example.com/ctx"])[0].path == "/@context"
    assert validate_event("event") == [SchemaProblem(None, "", "an EPCIS event must be a JSON object")]


def test_schema_validates_a_query_document_when_asked():
    document = load("Example_9.6.1-ObjectEvent.jsonld")
    query = {"@context": document["@context"], "type": "EPCISQueryDocument", "schemaVersion": "2.0",
             "creationDate": document["creationDate"],
             "epcisBody": {"queryResults": {"queryName": "SimpleEventQuery",
                                            "resultsBody": {"eventList": document["epcisBody"]["eventList"]}}}}  # fmt: skip
    assert validate_document(query, document_type="EPCISQueryDocument") == []
    query["epcisBody"]["queryResults"]["resultsBody"]["eventList"][1]["action"] = "NOPE"
    assert [(p.event_index, p.path) for p in validate_document(query, document_type="EPCISQueryDocument")] == [
        (1, "/epcisBody/queryResults/resultsBody/eventList/1/action")
    ]
