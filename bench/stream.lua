-- wrk script for bench/load.py: POST one fit-check stream per request, each with a session
-- id of its own, read every response to its end (wrk reads the whole chunked body), count
-- the ones that did not end with `event: complete`, and print one JSON line to parse.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  prefix = os.getenv("BENCH_SESSION_PREFIX") or "bench"
  counter = 0
  incomplete = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"query":"Senior Python engineer, FastAPI, Kubernetes","session_id":"%s-%d-%d"}',
    prefix, tid, counter)
  return wrk.format("POST", "/api/fit-check/stream",
    {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "event: complete", 1, true) then
    incomplete = incomplete + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("incomplete")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "socket_errors": %d, "incomplete": %d, "duration_us": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, e.connect + e.read + e.write + e.timeout, bad, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
