"""Labels without a chain: Digital Link URIs (GS1 percent-encoding, check digits), the EIP-712 label signature and
its compact form, QR PNG/SVG, and PDF sheets whose codes decode back to the same URIs."""

from __future__ import annotations

import base64
import io
import re
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import pypdfium2
import pytest
import zxingcpp
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from labels.digital_link import MAX_QUERY_FIELDS, _plain_pairs, build_uri, parse_path, parse_uri
from labels.lot import LabelPart, make_labels, write_images
from labels.qr import qr_png, qr_svg
from labels.sheets import CJK_FONT_FILES, fit_text, write_pdf
from labels.signature import (
    SECP256K1_N,
    decode_signature,
    encode_signature,
    label_digest,
    label_domain,
    label_typed_data,
    recover_signer,
    sign_label,
)
from partledger.errors import ConfigError, ValidationError
from partledger.ids import gtin_check_digit
from partledger.ids import GS1_CSET82
from wallets.signer import LocalSigner

GTIN = "04012345000016"
DOMAIN = label_domain(chain_id=31337, part_ledger="0x5FbDB2315678afecb367f032d93F642f64180aa3")
SIGNER = LocalSigner(Account.from_key(b"\x42" * 32))
serials = st.text(alphabet=sorted(GS1_CSET82), min_size=1, max_size=20)


@given(serials)
def test_every_gs1_serial_survives_the_uri_round_trip(serial):
    uri = build_uri("https://id.example.com/dl", gtin=GTIN, serial=serial, signature="x" * 86)
    assert re.fullmatch(r"https://id\.example\.com/dl/01/04012345000016/21/[A-Za-z0-9._%-]+\?sig=x{86}", uri)
    link = parse_uri(uri)
    assert (link.gtin, link.serial, link.signature) == (GTIN, serial, "x" * 86)


@given(st.text(alphabet="ab=&%+2F;sig", max_size=40))
def test_plain_query_parsing_agrees_with_parse_qsl(query):
    plain = _plain_pairs(query)
    if plain is not None:  # else the resolver goes to parse_qsl itself
        assert plain == parse_qsl(query, keep_blank_values=True, strict_parsing=True, encoding="ascii", errors="strict", max_num_fields=MAX_QUERY_FIELDS)


@given(st.text(alphabet="0123456789", min_size=7, max_size=17))
def test_gtin_check_digit_weighs_3_1_3_from_the_right(body):
    total = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(body)))
    assert gtin_check_digit(body) == (10 - total % 10) % 10


def test_reserved_characters_are_percent_encoded():
    assert build_uri("https://r.example", gtin=GTIN, serial='A/B%C?D&E"F+G') == "https://r.example/01/04012345000016/21/A%2FB%25C%3FD%26E%22F%2BG"


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("https://r.example/01/04012345000015/21/A", "invalid_gtin"),
        ("https://r.example/01/04012345000016/21/A%2", "invalid_digital_link"),
        ("https://r.example/01/04012345000016/21/A%20", "invalid_serial"),
        ("https://r.example/01/04012345000016/21/ABCDEFGHIJKLMNOPQRSTU", "invalid_serial"),
        ("ftp://r.example/01/04012345000016/21/A", "invalid_digital_link"),
        ("https://r.example/01/04012345000016/10/LOT/22/X/21/A", "invalid_digital_link"),
        ("https://r.example/21/A", "invalid_digital_link"),
        ("https://r.example/01/04012345000016/21/A?sig=1&sig=2", "invalid_digital_link"),
        ("https://r.example/01/04012345000016/21/" + "A" * 3000, "invalid_digital_link"),
    ],
)
def test_malformed_links_are_refused_with_a_code(uri, code):
    with pytest.raises(ValidationError) as info:
        parse_uri(uri)
    assert info.value.code == code


def test_lot_qualifier_and_short_gtins_are_accepted():
    link = parse_path("/01/4012345000016/10/LOT%2F7/21/S1", "linkType=linkset&other=kept")
    assert (link.gtin, link.lot, link.serial, link.link_type) == (GTIN, "LOT/7", "S1", "linkset")


def test_label_digest_is_the_eip712_hash_of_the_typed_data():
    for serial in ("S1", 'A/b%&"?', "Z" * 20):
        typed = label_typed_data(DOMAIN, gtin=GTIN, serial=serial)
        signable = encode_typed_data(full_message=typed)
        expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
        assert label_digest(DOMAIN, gtin=GTIN, serial=serial) == expected


def test_signature_recovers_to_the_signer_and_only_for_its_label():
    sig = sign_label(SIGNER, DOMAIN, gtin=GTIN, serial="S1")
    assert len(sig) == 86 and len(decode_signature(sig)) == 64
    assert recover_signer(DOMAIN, GTIN, "S1", sig) == SIGNER.address
    assert recover_signer(DOMAIN, GTIN, "S2", sig) != SIGNER.address
    other_chain = label_domain(chain_id=1, part_ledger=DOMAIN.verifyingContract)
    assert recover_signer(other_chain, GTIN, "S1", sig) != SIGNER.address
    other_contract = label_domain(chain_id=31337, part_ledger="0x" + "22" * 20)
    assert recover_signer(other_contract, GTIN, "S1", sig) != SIGNER.address


def test_malformed_and_high_s_signatures_recover_to_nobody():
    full = Account.from_key(b"\x42" * 32).unsafe_sign_hash(label_digest(DOMAIN, gtin=GTIN, serial="S1"))
    high_s = full.r.to_bytes(32, "big") + (SECP256K1_N - full.s).to_bytes(32, "big") + bytes([55 - full.v])
    with pytest.raises(ValueError):
        encode_signature(high_s)
    compact = decode_signature(encode_signature(bytes(full.signature)))
    assert compact is not None
    # EIP-2098 has no room for a high s: written into the compact form anyway it is another signature, of nobody here.
    flipped = compact[:32] + ((SECP256K1_N - full.s) | ((full.v - 27) ^ 1) << 255).to_bytes(32, "big")
    assert recover_signer(DOMAIN, GTIN, "S1", base64.urlsafe_b64encode(flipped).rstrip(b"=").decode()) != SIGNER.address
    for junk in ("", "not-a-signature", "A" * 85, "A" * 86 + "=", "*" * 86):
        assert recover_signer(DOMAIN, GTIN, "S1", junk) is None


def test_qr_png_decodes_and_svg_is_one_path():
    uri = build_uri("https://id.example.com", gtin=GTIN, serial="S/1", signature=sign_label(SIGNER, DOMAIN, gtin=GTIN, serial="S/1"))
    (decoded,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr_png(uri))))
    assert decoded.text == uri and decoded.format == zxingcpp.BarcodeFormat.QRCode
    svg = ElementTree.fromstring(qr_svg(uri))
    assert svg.tag.endswith("svg") and len([e for e in svg.iter() if e.tag.endswith("path")]) == 1


def test_images_are_written_one_per_part(tmp_path):
    labels = make_labels([LabelPart(GTIN, s, "L1") for s in ("A/1", "B")], signer=SIGNER, domain=DOMAIN, resolver="https://id.example.com", manufacturer="M")
    pngs = write_images(labels, tmp_path / "png", kind="png")
    svgs = write_images(labels, tmp_path / "svg", kind="svg")
    assert [p.name for p in pngs] == [f"{GTIN}_A~2F1.png", f"{GTIN}_B.png"] and len(svgs) == 2
    assert zxingcpp.read_barcodes(Image.open(pngs[0]))[0].text == labels[0].uri


@pytest.mark.parametrize("layout", ["a4", "thermal"])
def test_pdf_sheets_decode_back_to_their_uris(layout, tmp_path):
    maker = "华东精工汽车零部件 East China Precision Auto Parts"
    parts = [LabelPart(GTIN, serial, "LOT-2026/07") for serial in ("SN-000001", 'ODD/%&"?+*', "ZZZZZZZZZZZZZZZZZZZZ")]
    labels = make_labels(parts, signer=SIGNER, domain=DOMAIN, resolver="https://id.example.com", manufacturer=maker)
    path = tmp_path / f"{layout}.pdf"
    pages = write_pdf(labels, path, layout=layout)
    assert pages == (1 if layout == "a4" else 3)
    document = pypdfium2.PdfDocument(str(path))
    found = set()
    for page in document:
        image = page.render(scale=200 / 72, grayscale=True).to_pil()
        found |= {code.text for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}
        text = page.get_textpage().get_text_range()
        if layout == "thermal":
            assert "(01) 04012345000016" in text and "(10) LOT-2026/07" in text and "华东精工" in text.replace("\r", "").replace("\n", "")
    assert found == {label.uri for label in labels}
    if any(path.exists() for path in CJK_FONT_FILES):
        assert b"WenQuanYiMicroHei" in path.read_bytes()  # embedded, so any printer renders the Chinese name


def test_long_text_shrinks_then_wraps():
    size, lines = fit_text("(21) SERIAL", "Helvetica", width=200, largest=7, smallest=4.5, max_lines=2)
    assert (size, lines) == (7, ["(21) SERIAL"])
    size, lines = fit_text("(21) " + "W" * 20, "Helvetica", width=60, largest=7, smallest=4.5, max_lines=2)
    assert size == 4.5 and len(lines) == 2 and "".join(lines).replace(" ", "").startswith("(21)")


def test_a_signature_that_would_not_verify_is_never_printed():
    class WrongKey:
        address = SIGNER.address

        def sign_typed_data(self, full_message):
            return LocalSigner(Account.from_key(b"\x43" * 32)).sign_typed_data(full_message)

    with pytest.raises(ConfigError):
        make_labels([LabelPart(GTIN, "S1", "L1")], signer=WrongKey(), domain=DOMAIN, resolver="https://id.example.com", manufacturer="M")
