-- wrk script: POSTs prebuilt multipart bodies in turn and prints one JSON line at the end.
-- Usage: wrk ... -s bench/cycle_bodies.lua URL -- BODY_DIR CONTENT_TYPE
-- BODY_DIR holds 00000.body, 00001.body, ... (written by bench/workload.py).

local threads = {}
local requests = {}
local next_request = 1
statuses = {}  -- per thread: HTTP status -> count (read back by done() through thread:get)

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local dir, content_type = args[1], args[2]
   local headers = { ["Content-Type"] = content_type }
   while true do
      local file = io.open(string.format("%s/%05d.body", dir, #requests), "rb")
      if file == nil then break end
      table.insert(requests, wrk.format("POST", nil, headers, file:read("*a")))
      file:close()
   end
   assert(#requests > 0, "no request bodies in " .. dir)
end

function request()
   local prepared = requests[next_request]
   next_request = next_request % #requests + 1
   return prepared
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + count
      end
   end
   local status_items = {}
   for status, count in pairs(counts) do
      table.insert(status_items, string.format('"%d": %d', status, count))
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "statuses": {%s}, '
         .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes, table.concat(status_items, ", "),
      errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
