-- wrk script of bench/wrk.py: cycles through pre-generated raw HTTP requests.
--
--   wrk ... -s bench/requests.lua URL -- FILE THREADS ONCE
--
-- FILE holds the requests, each framed as "<byte length>\n<raw request bytes>". Thread k of THREADS
-- sends requests k, k+THREADS, ... so no two threads send the same one. ONCE=1: each thread sends its
-- share once and stops when every answer is in (a run that must deliver an exact set, e.g. end to end).
-- Every response is looked at: status codes counted, the `dur` of a Server-Timing header collected
-- (a few percent of one core at thousands of requests/s; the measured generator CPU includes it).
-- done() prints one line "BENCH-RESULT {json}" that bench/wrk.py parses.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, thread_count = args[1], tonumber(args[2])
  once = args[3] == "1"
  local handle = assert(io.open(file, "rb"))
  local data = handle:read("*a")
  handle:close()
  mine, index, wrapped, sent, received = {}, 0, 0, 0, 0
  statuses, timings = {}, {}
  local position, n = 1, 0
  while position <= #data do
    local newline = data:find("\n", position, true)
    local length = tonumber(data:sub(position, newline - 1))
    if n % thread_count == id then
      mine[#mine + 1] = data:sub(newline + 1, newline + length)
    end
    n = n + 1
    position = newline + length + 1
  end
  -- wrk calls thread 0's request() once before the run to check the request (which is not sent).
  verifying = id == 0
end

function request()
  if verifying then
    verifying = false
    return mine[1]
  end
  index = index + 1
  if index > #mine then
    if once then
      return ""  -- nothing more to send: this connection stays quiet until the thread stops
    end
    index, wrapped = 1, wrapped + 1
  end
  sent = sent + 1
  return mine[index]
end

function response(status, headers, body)
  received = received + 1
  if once and index > #mine and received == sent then
    wrk.thread:stop()  -- every request sent and answered
  end
  statuses[status] = (statuses[status] or 0) + 1
  local timing = headers["Server-Timing"] or headers["server-timing"]
  if timing then
    -- The metric named "app" if there is one, else the first metric with a duration.
    local dur = timing:match("app;[^,]*dur=([%d%.]+)") or timing:match("dur=([%d%.]+)")
    if dur then
      timings[#timings + 1] = tonumber(dur)
    end
  end
end

local function percentile(sorted, p)
  if #sorted == 0 then
    return nil
  end
  return sorted[math.max(1, math.ceil(#sorted * p / 100))]
end

local function json(value)
  if value == nil or value ~= value or value == math.huge or value == -math.huge then
    return "null"  -- nil, NaN and infinities (no requests at all) are not JSON numbers
  elseif type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      parts[#parts + 1] = string.format("%q:%s", tostring(k), json(v))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(value)
end

function done(summary, latency, requests)
  local all_statuses, all_timings, all_wrapped, all_sent = {}, {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      all_statuses[status] = (all_statuses[status] or 0) + n
    end
    for _, ms in ipairs(thread:get("timings") or {}) do
      all_timings[#all_timings + 1] = ms
    end
    all_wrapped = all_wrapped + (thread:get("wrapped") or 0)
    all_sent = all_sent + (thread:get("sent") or 0)
  end
  table.sort(all_timings)
  local result = {
    requests = summary.requests,
    sent = all_sent,
    duration_us = summary.duration,
    errors = summary.errors,
    latency_us = {
      p50 = latency:percentile(50),
      p90 = latency:percentile(90),
      p99 = latency:percentile(99),
      max = latency.max,
      mean = latency.mean,
    },
    statuses = next(all_statuses) and all_statuses or nil,
    server_timing_ms = #all_timings > 0 and {
      count = #all_timings,
      p50 = percentile(all_timings, 50),
      p99 = percentile(all_timings, 99),
    } or nil,
    wrapped = all_wrapped,
  }
  io.write("BENCH-RESULT ", json(result), "\n")
end
