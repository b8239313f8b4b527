-- Moves retries and deferred starts that are due back to the ready queue. ARGV[7] most to move.
-- Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(due) do
  redis.call('ZREM', K_DELAYED, id)
  local f = redis.call('HMGET', job_key(id), F_STATE, F_ATTEMPT)
  if f[1] == 'retrying' then
    transition(id, 'retrying', 'queued', f[2])
    make_ready(id)
  elseif f[1] == 'queued' then
    -- Deferred: its targets had no room (defer_start).
    make_ready(id)
  end
end
return #due
