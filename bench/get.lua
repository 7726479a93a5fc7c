-- wrk script for bench/load.py: GET the URL's path over and over (one connection: the
-- latency of one scrape at a time), count answers that are not 200, print one JSON line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  incomplete = 0
end

function response(status, headers, body)
  if status ~= 200 then
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
