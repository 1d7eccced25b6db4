#!/usr/bin/env python3
"""Writes the benchmark request bodies into a directory.

    payloads.py DIR

DIR/binary.json      the `data` of a binary-mode event (the ce-* headers are in post.lua);
                     headers and body together are about 1 KiB
DIR/structured.json  one structured-mode CloudEvent of exactly 1024 bytes
DIR/batch.json       a CloudEvents batch of 100 such events, with distinct ids
DIR/binary.headers   the binary-mode headers, one "name: value" a line (for oha and curl)
"""

import json
import sys
from pathlib import Path

EVENT_TYPE = "com.example.bench.order.created"
SOURCE = "/bench/shop"
BINARY_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "a8c3e2b0-0001",
    "ce-source": SOURCE,
    "ce-type": EVENT_TYPE,
    "ce-subject": "/orders/1",
    "ce-time": "2026-11-02T10:00:00Z",
}


def data(pad: int) -> dict:
    return {
        "orderId": "ord-000001",
        "customer": {"id": "c-981", "name": "Ada Lovelace", "tier": "gold"},
        "total": 120.5,
        "currency": "EUR",
        "region": "eu",
        "lines": [
            {"sku": "sku-1", "qty": 2, "price": 30.25},
            {"sku": "sku-2", "qty": 1, "price": 60.0},
        ],
        "note": "x" * pad,
    }


def event(i: int, pad: int) -> dict:
    return {
        "specversion": "1.0",
        "id": f"a8c3e2b0-{i:06d}",
        "source": SOURCE,
        "type": EVENT_TYPE,
        "subject": "/orders/1",
        "time": "2026-11-02T10:00:00Z",
        "datacontenttype": "application/json",
        "data": data(pad),
    }


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    # Pad the structured event to exactly 1024 bytes.
    base = len(compact(event(0, 0)))
    pad = 1024 - base
    structured = compact(event(0, pad))
    assert len(structured) == 1024, len(structured)
    (out / "structured.json").write_bytes(structured)
    # Binary mode: the same data; the ce-* headers carry the rest of the ~1 KiB.
    (out / "binary.json").write_bytes(compact(data(pad)))
    (out / "binary.headers").write_text(
        "".join(f"{k}: {v}\n" for k, v in BINARY_HEADERS.items())
    )
    batch = b"[" + b",".join(compact(event(i, pad)) for i in range(100)) + b"]"
    (out / "batch.json").write_bytes(batch)


if __name__ == "__main__":
    main()
