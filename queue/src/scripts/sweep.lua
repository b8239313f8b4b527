-- Drops index entries of jobs whose records have expired. ARGV[7] most to check.
-- Returns how many were dropped.
local old = redis.call('ZRANGEBYSCORE', K_JOBS, '-inf', now - retention_ms, 'LIMIT', 0, tonumber(ARGV[7]))
local dropped = 0
for _, id in ipairs(old) do
  if redis.call('EXISTS', job_key(id)) == 0 then
    redis.call('ZREM', K_JOBS, id)
    dropped = dropped + 1
  end
end
return dropped
