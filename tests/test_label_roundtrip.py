"""The labels' round trip, as a factory and its customers live it: a lot of 500 parts registered, its label sheets
made by `partledger labels make` with the service's site key, the PDF rendered to images, every QR code decoded
with zxing-cpp, and every decoded Digital Link verified against the live stack with the verdict its part's state
calls for. Then the same for the thermal format, PNG and SVG, and for a photo uploaded to /v1/scan/image."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pypdfium2
import zxingcpp
from PIL import Image, ImageFilter

from labels.digital_link import parse_uri
from partledger.errors import ConfigError
from partledger.ids import part_id
from tests.chainkit import GTIN_A, GTIN_B
from tests.labelkit import JSON, caught_up, live_stack, register, target
from tests.servicekit import PASSPHRASE

LOT = "LOT-500/A"
SERIALS = [f"SN{index:06d}" for index in range(495)] + ['ODD/%&"?', "ODD+*()'", "ODD:;<=>", "odd-lower.case_1", "Z" * 20]
SCRAPPED, QUARANTINED, SHIPPED = SERIALS[10:15], SERIALS[20:25], SERIALS[30:35]


def make_labels_cli(stack, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        os.path.join(os.path.dirname(sys.executable), "partledger"), "labels", "make",
        "--keystore", str(stack.keys_dir / "maker" / "service-site.json"),
        "--manifest", str(stack.manifest_path), "--index-db", stack.index_db_url, "--resolver", "https://id.partledger.test", *arguments,
    ]  # fmt: skip
    env = {**os.environ, "PARTLEDGER_KEYSTORE_PASSPHRASE": PASSPHRASE, "COLUMNS": "100"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def labels_in_process(stack, *arguments: str):
    from typer.testing import CliRunner

    from partledger_cli.main import app

    common = ["--keystore", str(stack.keys_dir / "maker" / "service-site.json"), "--manifest", str(stack.manifest_path),
              "--index-db", stack.index_db_url, "--resolver", "https://id.partledger.test"]  # fmt: skip
    return CliRunner().invoke(app, ["labels", "make", *common, *arguments], env={"PARTLEDGER_KEYSTORE_PASSPHRASE": PASSPHRASE})


def decode_pdf(path, dpi: int = 200) -> list[str]:
    texts = []
    for page in pypdfium2.PdfDocument(str(path)):
        image = page.render(scale=dpi / 72, grayscale=True).to_pil()
        texts += [code.text for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
    return texts


def test_a_lot_of_500_labels_printed_scanned_and_verified(deployed, tmp_path):
    ledger = deployed
    with live_stack(ledger, tmp_path / "stack", public_rate_limit="100000/minute") as (stack, client):
        maker = ledger.orgs["maker"].key
        fn = ledger.parts.functions
        register(ledger, maker, gtin=GTIN_A, lot=LOT, serials=SERIALS[:250])
        register(ledger, maker, gtin=GTIN_A, lot=LOT, serials=SERIALS[250:])
        register(ledger, maker, gtin=GTIN_B, lot="OTHER-LOT", serials=["NOT-IN-THIS-LOT"])
        ledger.act(maker, fn.scrapParts([part_id(GTIN_A, s) for s in SCRAPPED], bytes(32)))
        ledger.act(maker, fn.quarantineParts([part_id(GTIN_A, s) for s in QUARANTINED], bytes(32)))
        ledger.act(maker, fn.shipParts([part_id(GTIN_A, s) for s in SHIPPED], ledger.orgs["distributor"].id, bytes(32)))
        caught_up(client, ledger)

        made = make_labels_cli(stack, "--lot", LOT, "--out", str(tmp_path / "lot.pdf"))
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip().endswith(f"500 labels of lot {LOT} (21 pages, a4) signed by {stack.site_keys['maker']}: {tmp_path / 'lot.pdf'}")
        assert "signing" in made.stderr and "drawing" in made.stderr and "500/500" in made.stderr  # the progress bars

        decoded = decode_pdf(tmp_path / "lot.pdf")
        assert len(decoded) == 500 and len(set(decoded)) == 500
        links = [parse_uri(text) for text in decoded]
        assert {link.serial for link in links} == set(SERIALS) and {link.gtin for link in links} == {GTIN_A}
        assert all(text.startswith(f"https://id.partledger.test/01/{GTIN_A}/21/") for text in decoded)

        expected = {s: "genuine" for s in SERIALS} | dict.fromkeys(SCRAPPED, "scrapped") | dict.fromkeys(QUARANTINED, "quarantined")
        verdicts = {}
        for text, link in zip(decoded, links):
            answer = client.get(target(text), headers=JSON)
            assert answer.status_code == 200, answer.text
            verdicts[link.serial] = (answer.json()["verdict"], answer.json()["signature"])
        assert verdicts == {serial: (verdict, "valid") for serial, verdict in expected.items()}

        # A phone photo of part of a sheet: rotated, blurred a little, JPEG.
        page = pypdfium2.PdfDocument(str(tmp_path / "lot.pdf"))[0].render(scale=150 / 72).to_pil()
        photo = page.crop((0, 0, page.width // 2, page.height // 3)).rotate(12, expand=True, fillcolor="white").filter(ImageFilter.GaussianBlur(0.6))
        buffer = io.BytesIO()
        photo.convert("RGB").save(buffer, format="JPEG", quality=80)
        answer = client.post("/v1/scan/image", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        codes = answer.json()["codes"]
        assert len(codes) >= 4 and all(code["verdict"]["signature"] == "valid" for code in codes)
        multipart = client.post("/v1/scan/image", files={"image": ("label.jpg", buffer.getvalue(), "image/jpeg")})
        assert multipart.status_code == 200 and len(multipart.json()["codes"]) == len(codes)
        blank = io.BytesIO()
        Image.new("L", (200, 200), 255).save(blank, format="PNG")
        none = client.post("/v1/scan/image", content=blank.getvalue(), headers={"Content-Type": "image/png"})
        assert none.status_code == 422 and none.json()["error"]["code"] == "no_qr_code"
        junk = client.post("/v1/scan/image", content=b"not an image", headers={"Content-Type": "image/png"})
        assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_image"

        # The other formats, in process (the command itself was run as a user runs it above).
        thermal = labels_in_process(stack, "--lot", "OTHER-LOT", "--format", "thermal", "--out", str(tmp_path / "thermal.pdf"))
        assert thermal.exit_code == 0, thermal.output
        (text,) = decode_pdf(tmp_path / "thermal.pdf", dpi=300)
        assert client.get(target(text), headers=JSON).json()["verdict"] == "genuine"
        for kind in ("png", "svg"):
            images = labels_in_process(stack, "--lot", "OTHER-LOT", "--format", kind, "--out", str(tmp_path / kind))
            assert images.exit_code == 0, images.output
            assert [p.suffix for p in (tmp_path / kind).iterdir()] == [f".{kind}"]
        (png,) = (tmp_path / "png").iterdir()
        assert zxingcpp.read_barcodes(Image.open(png))[0].text == text

        refused = labels_in_process(stack, "--lot", "NO-SUCH-LOT")
        assert isinstance(refused.exception, ConfigError) and str(refused.exception).startswith("organisation")
