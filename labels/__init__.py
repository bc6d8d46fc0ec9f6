"""Labels: what goes on a serialised part so that anyone with a phone can check it.

digital_link  GS1 Digital Link URIs (build, parse, GS1 percent-encoding)
signature     the manufacturer's EIP-712 label signature, compact (EIP-2098) in the URI's `sig`
qr            QR codes (segno): PNG, SVG, and the module runs the PDF sheets draw
lot           signing the labels of a lot through a wallets Signer
sheets        print-ready PDF sheets (reportlab): A4 24-up and 60 x 40 mm thermal

Downstream of the shared core and the wallets only; the resolver that verifies labels is in ledger_service.
"""

import partledger  # noqa: E402, F401 - first: it chooses eth-hash's Keccak backend before any hash is taken
