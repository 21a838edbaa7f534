-- wrk script of load/overload.py: POSTs the requests of a file round-robin and counts answers by status.
-- Usage: wrk ... -s load/overload.lua URL -- REQUESTS_FILE
-- REQUESTS_FILE holds one request a line: "<path> <json body>" (the body on one line).
-- done() prints one line "overload-result {json}" with the status counts of every thread.

local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local requests = {}
local position = 0
counts = {}

function init(args)
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
  return requests[position]
end

function response(status, headers, body)
  local key = tostring(status)
  if status == 200 and body and body:find('"predictions"', 1, true) then
    key = "200 batch"
  end
  counts[key] = (counts[key] or 0) + 1
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
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get("counts") or {}) do
      total[key] = (total[key] or 0) + value
    end
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    statuses = json_object(total),
    errors = json_object(summary.errors),
    latency_p50_us = latency:percentile(50.0),
    latency_p99_us = latency:percentile(99.0),
    latency_max_us = latency.max,
  }
  io.write("overload-result " .. json_object(result) .. "\n")
end
