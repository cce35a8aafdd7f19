-- Replays raw HTTP requests prepared by `cardcallback loadtest -emit`:
-- each is a line with its length, then its bytes. Every request is signed
-- and unique, so the server does the whole work of a real click.
local reqs = {}
local n, i = 0, 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  while true do
    local line = f:read("*l")
    if not line then break end
    n = n + 1
    reqs[n] = f:read(tonumber(line))
  end
  f:close()
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
