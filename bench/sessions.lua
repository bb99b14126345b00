-- wrk script: each request carries the CLBKEY of one of 10,000 sessions,
-- and the headers given with wrk -H (e.g. Connection: close). An argument
-- after "--" pipelines that many requests a connection (wrk sends the next
-- batch once all of one are answered): a cheaper client, for when the load
-- generator shares the machine with what it measures. Then wrk's latencies
-- are a batch's, not a request's, and it cannot go with Connection: close.
local sessions = 10000
local depth = 1
math.randomseed(7)
init = function(args)
  depth = math.max(1, math.floor(tonumber(args[1] or "1") or 1))
end
local function one()
  local headers = { ["Cookie"] = "CLBKEY=session" .. math.random(sessions) }
  for name, value in pairs(wrk.headers) do headers[name] = value end
  return wrk.format("GET", "/", headers)
end
request = function()
  if depth == 1 then return one() end
  local batch = {}
  for i = 1, depth do batch[i] = one() end
  return table.concat(batch)
end
