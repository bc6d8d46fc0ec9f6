"""The CBV 2.0 vocabulary that EPCIS 2.0 events name: business steps, dispositions and the smaller lists beside them.

Shared by capture (is this bizStep a CBV word?), the mapping to ledger operations (which step is `shipping`?) and
the query side (EQ_bizStep takes bare words). An event may write one CBV value four ways; `bare_word` folds them to
the bare word the JSON binding prefers:

    urn:epcglobal:cbv:bizstep:shipping        the EPCIS 1.x URN
    https://ref.gs1.org/cbv/BizStep-shipping  the CBV 2.0 web vocabulary URI
    cbv:BizStep-shipping                      the same as a compact IRI (the EPCIS context binds cbv:)
    shipping                                  the bare word

The word lists are CBV 2.0's (GS1 Core Business Vocabulary 2.0, §7), the same as the enums of GS1's EPCIS 2.0 JSON
schema.
"""

from __future__ import annotations

from typing import Final

BIZ_STEPS: Final = frozenset({
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning", "creating_class_instance",
    "cycle_counting", "decommissioning", "departing", "destroying", "disassembling", "dispensing", "encoding",
    "entering_exiting", "holding", "inspecting", "installing", "killing", "loading", "other", "packing", "picking",
    "receiving", "removing", "repackaging", "repairing", "replacing", "reserving", "retail_selling", "sampling",
    "sensor_reporting", "shipping", "staging_outbound", "stock_taking", "stocking", "storing", "transporting",
    "unloading", "unpacking", "void_shipping",
})  # fmt: skip

DISPOSITIONS: Final = frozenset({
    "active", "available", "completeness_inferred", "completeness_verified", "conformant", "container_closed",
    "container_open", "damaged", "destroyed", "dispensed", "disposed", "encoded", "expired", "in_progress",
    "in_transit", "inactive", "mismatch_class", "mismatch_instance", "mismatch_quantity", "needs_replacement",
    "no_pedigree_match", "non_conformant", "non_sellable_other", "partially_dispensed", "recalled", "reserved",
    "retail_sold", "returned", "sellable_accessible", "sellable_not_accessible", "stolen", "unavailable", "unknown",
})  # fmt: skip

BIZ_TRANSACTION_TYPES: Final = frozenset(
    {"bol", "cert", "desadv", "inv", "pedigree", "po", "poc", "prodorder", "recadv", "rma", "testprd", "testres", "upevt"}
)
SOURCE_DEST_TYPES: Final = frozenset({"owning_party", "possessing_party", "location"})
ERROR_REASONS: Final = frozenset({"did_not_occur", "incorrect_data"})
EVENT_TYPES: Final = frozenset(
    {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"}
)
ACTIONS: Final = frozenset({"ADD", "OBSERVE", "DELETE"})
# Sensor vocabulary (EPCIS 2.0 §7.3.8, CBV 2.0 §7.5): gs1: measurement types and alert types, cbv:Comp- components.
MEASUREMENT_TYPES: Final = frozenset({
    "AbsoluteHumidity", "AbsorbedDose", "AbsorbedDoseRate", "Acceleration", "Altitude", "AmountOfSubstance",
    "AmountOfSubstancePerUnitVolume", "Angle", "AngularAcceleration", "AngularMomentum", "AngularVelocity", "Area",
    "Capacitance", "Conductance", "Conductivity", "Count", "Density", "Dimensionless", "DoseEquivalent",
    "DoseEquivalentRate", "DynamicViscosity", "ElectricCharge", "ElectricCurrent", "ElectricCurrentDensity",
    "ElectricFieldStrength", "Energy", "Exposure", "Force", "Frequency", "Illuminance", "Inductance", "Irradiance",
    "KinematicViscosity", "Length", "LinearMomentum", "Luminance", "LuminousFlux", "LuminousIntensity", "MagneticFlux",
    "MagneticFluxDensity", "MagneticVectorPotential", "Mass", "MassConcentration", "MassFlowRate", "MassPerAreaTime",
    "MemoryCapacity", "MolalityOfSolute", "MolarEnergy", "MolarMass", "MolarVolume", "Power", "Pressure",
    "RadiantFlux", "RadiantIntensity", "Radioactivity", "RelativeHumidity", "Resistance", "Resistivity", "SolidAngle",
    "SpecificVolume", "Speed", "SurfaceDensity", "SurfaceTension", "Temperature", "Time", "Torque", "Voltage",
    "Volume", "VolumeFlowRate", "VolumeFraction", "VolumetricFlux", "Wavenumber",
})  # fmt: skip
SENSOR_ALERT_TYPES: Final = frozenset({"ALARM_CONDITION", "ERROR_CONDITION"})
COMPONENTS: Final = frozenset({
    "x", "y", "z", "axial_distance", "azimuth", "height", "spherical_radius", "polar_angle", "elevation_angle",
    "easting", "northing", "latitude", "longitude", "altitude",
})  # fmt: skip

# Each CBV list's URN prefix (EPCIS 1.x), its web-vocabulary term prefix (CBV 2.0 §8), and its words.
CBV_URI: Final = "https://ref.gs1.org/cbv/"
EPCIS_URI: Final = "https://ref.gs1.org/epcis/"
GS1_VOC_URI: Final = "https://gs1.org/voc/"
_LISTS: Final = (
    ("urn:epcglobal:cbv:bizstep:", "BizStep-", BIZ_STEPS),
    ("urn:epcglobal:cbv:disp:", "Disp-", DISPOSITIONS),
    ("urn:epcglobal:cbv:btt:", "BTT-", BIZ_TRANSACTION_TYPES),
    ("urn:epcglobal:cbv:sdt:", "SDT-", SOURCE_DEST_TYPES),
    ("urn:epcglobal:cbv:er:", "ER-", ERROR_REASONS),
)
_PREFIXES: Final = tuple(
    prefix
    for urn, term, _ in _LISTS
    for prefix in (urn, CBV_URI + term, "cbv:" + term, "http://ref.gs1.org/cbv/" + term)
) + (EPCIS_URI, "epcis:")


def bare_word(value: str) -> str:
    """The bare CBV word (or EPCIS event type / action) of `value`; any other value, URIs included, unchanged."""
    if ":" not in value:
        return value  # already bare: the common case, kept cheap
    for prefix in _PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def bizstep_uri(word: str) -> str:
    """The CBV 2.0 web-vocabulary URI of a bizStep word (https://ref.gs1.org/cbv/BizStep-shipping)."""
    return f"{CBV_URI}BizStep-{word}"


def disposition_uri(word: str) -> str:
    """The CBV 2.0 web-vocabulary URI of a disposition word (https://ref.gs1.org/cbv/Disp-recalled)."""
    return f"{CBV_URI}Disp-{word}"


def is_bizstep(value: str) -> bool:
    """Whether `value`, in any of the four forms, names a CBV 2.0 business step."""
    return bare_word(value) in BIZ_STEPS


def is_disposition(value: str) -> bool:
    """Whether `value`, in any of the four forms, names a CBV 2.0 disposition."""
    return bare_word(value) in DISPOSITIONS
