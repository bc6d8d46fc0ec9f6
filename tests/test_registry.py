"""ConsortiumRegistry on a live Anvil: only the operator administers; keys are added once and revoked for good."""

from __future__ import annotations

from eth_utils import keccak

from partledger.ids import ascii32
from partledger.model import Role
from tests.chainkit import reverts

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")


def test_operator_registers_organisation_with_roles_and_name(ledger):
    receipt = ledger.act(ledger.operator, ledger.registry.functions.registerOrganisation(int(Role.WORKSHOP | Role.DISTRIBUTOR), "汽修连锁 Chain Garage"))
    (event,) = ledger.events(receipt, ledger.registry, "OrganisationRegistered")
    org_id = event["args"]["orgId"]
    assert org_id == len(ledger.orgs) + 1
    assert (event["args"]["roles"], event["args"]["name"]) == (int(Role.WORKSHOP | Role.DISTRIBUTOR), "汽修连锁 Chain Garage")
    assert ledger.registry.functions.organisation(org_id).call() == [int(Role.WORKSHOP | Role.DISTRIBUTOR), False]
    assert ledger.registry.functions.organisationCount().call() == org_id


def test_member_key_cannot_administer_registry(ledger):
    key = ledger.orgs["maker"].key
    r = ledger.registry.functions
    for call in (r.registerOrganisation(1, "x"), r.addSiteKey(1, ledger.spare_keys[0], ascii32("s")), r.suspendOrganisation(1), r.setOrganisationRoles(1, 2)):
        with reverts("AccessControlUnauthorizedAccount", key, OPERATOR_ROLE):
            ledger.act(key, call)


def test_register_fails_on_invalid_roles(ledger):
    for roles in (0, 1 << 7, 0xFFFF):
        with reverts("ConsortiumRegistryInvalidRoles", roles):
            ledger.act(ledger.operator, ledger.registry.functions.registerOrganisation(roles, "bad"))


def test_set_roles_changes_what_keys_may_do(ledger):
    maker = ledger.orgs["maker"]
    receipt = ledger.act(ledger.operator, ledger.registry.functions.setOrganisationRoles(maker.id, int(Role.LOGISTICS)))
    assert ledger.events(receipt, ledger.registry, "OrganisationRolesChanged")[0]["args"]["roles"] == int(Role.LOGISTICS)
    with reverts("ConsortiumRegistryMissingRole", maker.id, int(Role.MANUFACTURER)):
        ledger.register(maker, ["AFTER"])
    with reverts("ConsortiumRegistryUnknownOrganisation", 77):
        ledger.act(ledger.operator, ledger.registry.functions.setOrganisationRoles(77, 1))


def test_add_site_key_records_site_and_block(ledger):
    key = ledger.spare_keys[0]
    warehouse = ledger.orgs["warehouse"]
    receipt = ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(warehouse.id, key, ascii32("wh-2")))
    (event,) = ledger.events(receipt, ledger.registry, "SiteKeyAdded")
    assert (event["args"]["orgId"], event["args"]["key"], event["args"]["site"]) == (warehouse.id, key, ascii32("wh-2"))
    assert ledger.registry.functions.siteKey(key).call() == (warehouse.id, ascii32("wh-2"), receipt["blockNumber"], 0)
    assert ledger.registry.functions.authorize(key, 0).call() == [warehouse.id, int(Role.LOGISTICS)]


def test_add_site_key_refuses_reuse_zero_key_and_unknown_org(ledger):
    r = ledger.registry.functions
    maker = ledger.orgs["maker"]
    with reverts("ConsortiumRegistryKeyAlreadyRegistered", maker.key, maker.id):
        ledger.act(ledger.operator, r.addSiteKey(ledger.orgs["warehouse"].id, maker.key, ascii32("s")))
    with reverts("ConsortiumRegistryZeroKey"):
        ledger.act(ledger.operator, r.addSiteKey(maker.id, "0x" + "00" * 20, ascii32("s")))
    with reverts("ConsortiumRegistryUnknownOrganisation", 0):
        ledger.act(ledger.operator, r.addSiteKey(0, ledger.spare_keys[0], ascii32("s")))


def test_revoked_key_is_never_added_again(ledger):
    maker = ledger.orgs["maker"]
    ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(maker.keys[1]))
    with reverts("ConsortiumRegistryKeyAlreadyRegistered", maker.keys[1], maker.id):
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(maker.id, maker.keys[1], ascii32("again")))


def test_org_revokes_its_own_compromised_key_with_a_sibling_key(ledger):
    maker = ledger.orgs["maker"]
    receipt = ledger.act(maker.keys[0], ledger.registry.functions.revokeSiteKey(maker.keys[1]))
    (event,) = ledger.events(receipt, ledger.registry, "SiteKeyRevoked")
    assert (event["args"]["orgId"], event["args"]["key"], event["args"]["revokedBy"]) == (maker.id, maker.keys[1], maker.keys[0])
    assert ledger.registry.functions.siteKey(maker.keys[1]).call()[3] == receipt["blockNumber"]
    with reverts("ConsortiumRegistryKeyRevoked", maker.keys[1], receipt["blockNumber"]):
        ledger.act(maker.keys[1], ledger.registry.functions.revokeSiteKey(maker.keys[0]))


def test_other_org_cannot_revoke_a_key(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    with reverts("ConsortiumRegistryUnauthorizedRevocation", warehouse.key, maker.key):
        ledger.act(warehouse.key, ledger.registry.functions.revokeSiteKey(maker.key))
    with reverts("ConsortiumRegistryUnknownKey", ledger.spare_keys[0]):
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(ledger.spare_keys[0]))


def test_revoking_twice_names_the_revocation_block(ledger):
    key = ledger.orgs["warehouse"].key
    receipt = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(key))
    with reverts("ConsortiumRegistryKeyRevoked", key, receipt["blockNumber"]):
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(key))


def test_suspend_and_reinstate_refuse_no_op(ledger):
    org = ledger.orgs["distributor"]
    r = ledger.registry.functions
    with reverts("ConsortiumRegistryOrganisationUnchanged", org.id):
        ledger.act(ledger.operator, r.reinstateOrganisation(org.id))
    receipt = ledger.act(ledger.operator, r.suspendOrganisation(org.id))
    assert len(ledger.events(receipt, ledger.registry, "OrganisationSuspended")) == 1
    with reverts("ConsortiumRegistryOrganisationUnchanged", org.id):
        ledger.act(ledger.operator, r.suspendOrganisation(org.id))
    with reverts("ConsortiumRegistryOrganisationSuspended", org.id):
        ledger.view(r.authorize(org.key, 0))
    receipt = ledger.act(ledger.operator, r.reinstateOrganisation(org.id))
    assert len(ledger.events(receipt, ledger.registry, "OrganisationReinstated")) == 1


def test_admin_can_appoint_a_second_operator(ledger):
    new_operator = ledger.spare_keys[1]
    ledger.act(ledger.operator, ledger.registry.functions.grantRole(OPERATOR_ROLE, new_operator))
    ledger.act(new_operator, ledger.registry.functions.registerOrganisation(int(Role.RECYCLER), "second"))
