"""Labels: GS1 Digital Link URIs, QR codes and printable label sheets for serialised parts (issue #5)."""
