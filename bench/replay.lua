-- wrk script: replay pre-generated, signed Plivo requests (bench/gen_requests.py), each once.
--
--   wrk -t2 -c64 -d10s -s bench/replay.lua http://127.0.0.1:PORT -- FILE WINDOW_S THREADS [RATE]
--
-- FILE      the request files' prefix: thread i reads FILE.i (FILE.0, FILE.1, ...), so the
--           threads' slices are disjoint and no request is sent twice. Each file is a header
--           line ("#plivo-requests v1 <path> <count>"), then one request a line. A request is
--           read from the file and formatted with wrk.format when its turn comes: a thread's
--           init() only opens its file, so every thread starts at once (wrk starts a thread as
--           soon as its own init() returns: a long load would give the first thread the server
--           to itself for a while).
-- WINDOW_S  the measured window, in seconds from the thread's first request. After it no request
--           is sent; the requests in flight are answered during the rest of wrk's -d, so every
--           request the server took is counted (the store check relies on it).
-- THREADS   wrk's -t again (a thread's init() cannot see how many threads there are).
-- RATE      optional: a target rate in requests/s for the whole run. Each thread hands out send
--           slots on a fixed schedule (RATE / threads per thread, so on average RATE /
--           connections per connection) through wrk's delay() hook. Without it, delay() returns
--           0 and a connection sends as soon as its previous answer arrived.
--
-- done() prints one line, BENCH_JSON {...}: requests, status counts, errors, latency (ms, from
-- wrk's histogram), and the answers counted in the window (the throughput).

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local IDLE_MS = 3600 * 1000 -- a delay no run reaches: the connection stays quiet

-- main state: setup() and done() ---------------------------------------------------------------
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- thread state: init(), delay(), request(), response() -----------------------------------------
local fh -- this thread's request file
local available = 0 -- requests in it
local path
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local window_ms, interval_ms, nthreads
local cutoff, next_slot
local reserved = 0
local checked -- false until wrk's check: one request() on thread 0 before the run, never sent

-- counters, read by done() through thread:get
sent = 0
statuses = {}
in_window = 0
in_window_2xx = 0
exhausted = 0
overrun = 0

function init(args)
  local file = args[1] .. "." .. tid
  window_ms = tonumber(args[2]) * 1000
  nthreads = tonumber(args[3])
  checked = tid ~= 0
  local rate = tonumber(args[4] or "0")
  fh = assert(io.open(file, "r"))
  local header = fh:read("*l")
  local p, count = string.match(header or "", "^#plivo%-requests v1 (%S+) (%d+)$")
  assert(p, file .. ": not a request file")
  path, available = p, tonumber(count)
  if rate > 0 then
    interval_ms = 1000 * nthreads / rate
  end
end

function delay()
  local now = now_ms()
  if cutoff == nil then
    cutoff = now + window_ms
    if interval_ms ~= nil then -- threads take turns: together, one slot every interval / n
      next_slot = now + tid * interval_ms / nthreads
    end
  end
  if now >= cutoff then
    return IDLE_MS
  end
  -- On thread 0, wrk's check took one request from the file.
  if reserved >= available - (tid == 0 and 1 or 0) then
    exhausted = exhausted + 1
    return IDLE_MS
  end
  reserved = reserved + 1
  if interval_ms == nil then
    return 0
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  if slot >= cutoff then
    return IDLE_MS
  end
  local wait = slot - now
  return wait > 0 and wait or 0
end

function request()
  local line = fh:read("*l")
  if line == nil then -- never expected: delay() keeps within the file
    overrun = overrun + 1
    return wrk.format("GET", "/__bench_overrun__", {}, nil)
  end
  local body, v2, v2nonce, v3, v3nonce =
    string.match(line, "^([^\t]+)\t([^\t]+)\t(%d+)\t([^\t]+)\t(%d+)$")
  assert(body, "bad request line")
  if checked then
    sent = sent + 1
  end
  checked = true
  headers["X-Plivo-Signature-V2"] = v2
  headers["X-Plivo-Signature-V2-Nonce"] = v2nonce
  headers["X-Plivo-Signature-V3"] = v3
  headers["X-Plivo-Signature-V3-Nonce"] = v3nonce
  return wrk.format("POST", path, headers, body)
end

function response(status, _headers, _body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if cutoff ~= nil and now_ms() <= cutoff then -- answers received within the window
    in_window = in_window + 1
    if status >= 200 and status < 300 then
      in_window_2xx = in_window_2xx + 1
    end
  end
end

-- main state -----------------------------------------------------------------------------------
function done(summary, latency, _requests)
  local codes = {}
  local totals = { sent = 0, in_window = 0, in_window_2xx = 0, exhausted = 0, overrun = 0 }
  for _, t in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + (t:get(key) or 0)
    end
    for code, count in pairs(t:get("statuses") or {}) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do
    parts[#parts + 1] = string.format('"%d": %d', tonumber(code), count)
  end
  table.sort(parts)
  local e = summary.errors
  local function ms(us)
    return us / 1000.0
  end
  io.write(
    string.format(
      'BENCH_JSON {"requests": %d, "duration_s": %.3f, "sent": %d, "in_window": %d, '
        .. '"in_window_2xx": %d, "exhausted": %d, "overrun": %d, "status": {%s}, '
        .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
        .. '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}}\n',
      summary.requests,
      summary.duration / 1e6,
      totals.sent,
      totals.in_window,
      totals.in_window_2xx,
      totals.exhausted,
      totals.overrun,
      table.concat(parts, ", "),
      e.connect,
      e.read,
      e.write,
      e.status,
      e.timeout,
      ms(latency:percentile(50)),
      ms(latency:percentile(90)),
      ms(latency:percentile(99)),
      ms(latency.max),
      ms(latency.mean)
    )
  )
end
