-- Moves retries that are due back to the ready queue. ARGV[7] most to move.
-- Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(due) do
  redis.call('ZREM', K_DELAYED, id)
  local f = redis.call('HMGET', job_key(id), 'state', 'attempt')
  if f[1] == 'retrying' then
    transition(id, 'retrying', 'queued', f[2])
    local k = redis.call('HMGET', job_key(id), 'concurrency_key', 'seq')
    enqueue_key(id, k[1], k[2])
    redis.call('XADD', K_QUEUE, '*', 'job', id)
  end
end
return #due
