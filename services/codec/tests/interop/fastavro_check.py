"""Reads records Tally encoded, with fastavro (an independent Avro implementation).

For each `<name>.<kind>.avro` in the directory given as argv[1]: check the single-object header
against fastavro's own CRC-64-AVRO fingerprint of the schema, decode the datum, report what it
found (tenant, body branch, every decimal amount) as one JSON line, and write the record back,
re-encoded by fastavro with a single-object header, as `<name>.<kind>.fastavro`.
"""
import decimal
import io
import json
import os
import struct
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

directory = sys.argv[1]
schemas = {}
for kind in ("command", "event"):
    with open(os.path.join(directory, f"{kind}.avsc")) as f:
        parsed = fastavro.parse_schema(json.load(f))
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    schemas[kind] = (parsed, fp)


def amounts(value, out):
    """Every decimal in traversal order (dict keys in schema order)."""
    if isinstance(value, decimal.Decimal):
        out.append(str(value))
    elif isinstance(value, dict):
        for v in value.values():
            amounts(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            amounts(v, out)
    return out


for name in sorted(os.listdir(directory)):
    if not name.endswith(".avro"):
        continue
    kind = name.split(".")[-2]
    parsed, fp = schemas[kind]
    with open(os.path.join(directory, name), "rb") as f:
        data = f.read()
    # fastavro's CRC-64-AVRO hex string is already in the byte order of the header (little-endian).
    header_ok = data[:2] == b"\xc3\x01" and data[2:10] == fp
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, return_record_name=True)
    body_name = record["body"][0].split(".")[-1]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    with open(os.path.join(directory, name[: -len(".avro")] + ".fastavro"), "wb") as f:
        f.write(data[:10] + out.getvalue())
    print(json.dumps({
        "file": name,
        "header_ok": header_ok,
        "tenant": record["tenant"],
        "body": body_name,
        "amounts": amounts(record["body"][1], []),
    }))
