-- Put in the ready set every named account with work waiting, at once or at its first delayed job,
-- and wake a dispatcher. The scripts keep the set as they give accounts work; a worker runs this at
-- its start (and for an account whose quota the set had lost) for what an older version or a lost
-- write left out. KEYS: 1 ready, 2 wake.  ARGV: 1 lane prefix, 2 delayed key prefix, then accounts.
-- Returns how many of them have work.
local now = now_ms()
local n = 0
for i = 3, #ARGV do
  local account = ARGV[i]
  if lanes_busy(ARGV[1], account) then
    make_ready(KEYS[1], KEYS[2], account, now)
    n = n + 1
  else
    local first = redis.call('ZRANGE', ARGV[2] .. account, 0, 0, 'WITHSCORES')
    if first[1] then
      make_ready(KEYS[1], KEYS[2], account, tonumber(first[2]))
      n = n + 1
    end
  end
end
return n
