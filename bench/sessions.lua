-- wrk script: each request carries the CLBKEY of one of 10,000 sessions.
local sessions = 10000
math.randomseed(7)
request = function()
  return wrk.format("GET", "/", { ["Cookie"] = "CLBKEY=session" .. math.random(sessions) })
end
