-- Counts responses that are not 200 with the expected body length
-- (EXPECT_LEN); wrk prints the count as "BAD n" at the end.
local expected = tonumber(os.getenv("EXPECT_LEN") or "")
local method = os.getenv("WRK_METHOD")
if method then
  wrk.method = method
  wrk.body = string.rep("x", tonumber(os.getenv("WRK_BODY_LEN") or "0"))
  wrk.headers["Content-Type"] = "application/octet-stream"
end
if os.getenv("WRK_CLOSE") then
  wrk.headers["Connection"] = "close"
end
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  bad = 0
end
if expected then
  function response(status, headers, body)
    if status ~= 200 or #body ~= expected then
      bad = bad + 1
    end
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
  end
  io.write(string.format("BAD %d\n", total))
end
