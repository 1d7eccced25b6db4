-- wrk script: POST one pre-built CloudEvents request, over and over.
--
-- Environment:
--   BENCH_MODE   binary | structured | batch
--   BENCH_BODY   file holding the request body (bench/payloads.py writes them)
--
-- The request is built once, so wrk sends it from its fast path. At the end one line
-- starting with "BENCH " gives the raw counts that bench/run.sh reads:
-- requests, duration in microseconds, non-2xx answers, socket errors, p50 and p99 in
-- microseconds.

local mode = os.getenv("BENCH_MODE") or "structured"
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
if mode == "binary" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["ce-specversion"] = "1.0"
  wrk.headers["ce-id"] = "a8c3e2b0-0001"
  wrk.headers["ce-source"] = "/bench/shop"
  wrk.headers["ce-type"] = "com.example.bench.order.created"
  wrk.headers["ce-subject"] = "/orders/1"
  wrk.headers["ce-time"] = "2026-11-02T10:00:00Z"
elseif mode == "structured" then
  wrk.headers["Content-Type"] = "application/cloudevents+json"
elseif mode == "batch" then
  wrk.headers["Content-Type"] = "application/cloudevents-batch+json"
else
  error("BENCH_MODE must be binary, structured or batch, not " .. mode)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
