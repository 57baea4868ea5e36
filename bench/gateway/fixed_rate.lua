-- wrk script: a fixed request rate shared by all connections, so every proxy carries the same
-- load and latency compares at equal throughput.
--   wrk -t1 -c50 -d6s --latency -s fixed_rate.lua URL -- RATE
-- Request k of the run is due at start + k/RATE; wrk's delay() hook holds each connection until
-- its request's slot (wrk's timers tick in whole milliseconds, so requests leave in 1-ms
-- batches). A proxy that falls behind owes the requests it missed and gets them as soon as a
-- connection is free, as an open-loop client would send them; one that cannot keep up at all
-- shows it in its rps. Use with -t1: each wrk thread has its own schedule.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } fixed_rate_timespec;
int clock_gettime(int clock_id, fixed_rate_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("fixed_rate_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local interval_ms
local next_due_ms

function init(args)
  local rate = tonumber(args[1])
  if rate == nil or rate <= 0 then
    error("fixed_rate.lua: give the rate in requests per second after --, e.g. -- 15000")
  end
  interval_ms = 1000 / rate
end

function delay()
  local now = now_ms()
  if next_due_ms == nil then
    next_due_ms = now
  end
  local wait = next_due_ms - now
  next_due_ms = next_due_ms + interval_ms
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end
