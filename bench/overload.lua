-- wrk script of bench/overload.py: POSTs the requests of a file round-robin and counts answers by status.
-- Usage: wrk ... -s bench/overload.lua URL -- REQUESTS_FILE [probe SKIP_MS]
-- REQUESTS_FILE holds one request a line: "<path> <json body>" (the body on one line).
-- done() prints one line "overload-result {json}" with the status counts of every thread.
-- With "probe", run with as many threads as connections: each thread then has one connection, whose
-- requests and responses alternate, so the time from request() to response() is that request's
-- latency; done() adds latency percentiles by status (wrk's own latency figures mix every status).
-- Probes connect before the crowd does (a busy server may accept new connections slowly), and count
-- nothing during their first SKIP_MS milliseconds, until the crowd is there.

local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } overload_timespec;
int clock_gettime(int clock_id, overload_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_buffer = ffi.new("overload_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_buffer)
  return tonumber(now_buffer.tv_sec) * 1000 + tonumber(now_buffer.tv_nsec) / 1e6
end

local requests = {}
local position = 0
local probe = false
local sent_at = nil
local counting_from = 0
counts = {}
-- latencies["<key> <whole milliseconds>"] = count, probe threads only. Flat: wrk's thread:get() loses
-- its place in a table that holds tables.
latencies = {}

function init(args)
  probe = args[2] == "probe"
  if probe then
    counting_from = now_ms() + tonumber(args[3] or "0")
  end
  local file = assert(io.open(args[1], "r"))
  local headers = { ["Content-Type"] = "application/json" }
  for line in file:lines() do
    local path, body = line:match("^(%S+) (.*)$")
    if path then
      table.insert(requests, wrk.format("POST", path, headers, body))
    end
  end
  file:close()
  assert(#requests > 0, "no request in " .. args[1])
  -- Threads start at different requests, so a mix is mixed from the first second.
  position = (thread_index or 0) * 7919 % #requests
end

function request()
  position = position % #requests + 1
  if probe then
    sent_at = now_ms()
  end
  return requests[position]
end

function remember_latency(key, ms)
  local slot = key .. " " .. ms
  latencies[slot] = (latencies[slot] or 0) + 1
end

-- Counts: "200" single rows, "200 batch" batches, other statuses by number. Latencies: "accepted" (every
-- 200), "batch" (200 batches), other statuses by number.
function response(status, headers, body)
  if probe and (sent_at == nil or sent_at < counting_from) then
    sent_at = nil
    return
  end
  local key = tostring(status)
  local batch = status == 200 and body and body:find('"predictions"', 1, true)
  if batch then
    key = "200 batch"
  end
  counts[key] = (counts[key] or 0) + 1
  if status == 503 and not (headers["retry-after"] or headers["Retry-After"]) then
    counts["503 without Retry-After"] = (counts["503 without Retry-After"] or 0) + 1
  end
  if probe and sent_at then
    local ms = math.floor(now_ms() - sent_at)
    sent_at = nil
    remember_latency(status == 200 and "accepted" or tostring(status), ms)
    if batch then
      remember_latency("batch", ms)
    end
  end
end

local function percentile(by_ms, share)
  local total = 0
  local keys = {}
  for ms, n in pairs(by_ms) do
    total = total + n
    table.insert(keys, ms)
  end
  table.sort(keys)
  local covered = 0
  for _, ms in ipairs(keys) do
    covered = covered + by_ms[ms]
    if covered >= share * total then
      return ms
    end
  end
  return keys[#keys]
end

local function json_object(values)
  local parts = {}
  for key, value in pairs(values) do
    table.insert(parts, string.format("%q:%s", tostring(key), tostring(value)))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, _)
  local total = {}
  local merged = {}
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get("counts") or {}) do
      total[key] = (total[key] or 0) + value
    end
    for slot, n in pairs(thread:get("latencies") or {}) do
      local key, ms = slot:match("^(.-) (%d+)$")
      merged[key] = merged[key] or {}
      merged[key][tonumber(ms)] = (merged[key][tonumber(ms)] or 0) + n
    end
  end
  local by_status = {}
  for key, by_ms in pairs(merged) do
    local samples = 0
    for _, n in pairs(by_ms) do
      samples = samples + n
    end
    by_status[key] = json_object({ p50_ms = percentile(by_ms, 0.5), p99_ms = percentile(by_ms, 0.99),
                                   max_ms = percentile(by_ms, 1.0), samples = samples })
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    statuses = json_object(total),
    errors = json_object(summary.errors),
    latency_p50_us = latency:percentile(50.0),
    latency_p99_us = latency:percentile(99.0),
    latency_max_us = latency.max,
    latency_by_status = json_object(by_status),
  }
  io.write("overload-result " .. json_object(result) .. "\n")
end
