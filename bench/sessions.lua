-- wrk script: each request carries the CLBKEY of one of 10,000 sessions,
-- and the headers given with wrk -H (e.g. Connection: close).
local sessions = 10000
math.randomseed(7)
request = function()
  local headers = { ["Cookie"] = "CLBKEY=session" .. math.random(sessions) }
  for name, value in pairs(wrk.headers) do headers[name] = value end
  return wrk.format("GET", "/", headers)
end
