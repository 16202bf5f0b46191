-- wrk script: replay the requests of a file written by click_mix.write_requests, in a loop.
--   wrk -s loadtests/clicks.lua http://127.0.0.1:8080 -- /tmp/requests.txt
-- A line is the target, then "Name: value" headers, tab-separated. Every request is
-- formatted once in init, so wrk's load core spends nothing per request on Lua
-- beyond returning a string; there is no response() hook, which would cost a Lua
-- call per response.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    local fields = {}
    for field in string.gmatch(line, "[^\t]+") do
      fields[#fields + 1] = field
    end
    local headers = {}
    for i = 2, #fields do
      local name, value = string.match(fields[i], "^([^:]+): (.*)$")
      headers[name] = value
    end
    count = count + 1
    requests[count] = wrk.format("GET", fields[1], headers)
  end
  if count == 0 then
    error("no requests in " .. args[1])
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
