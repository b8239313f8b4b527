-- Drops expired jobs from the indexes: the entries of K_JOBS whose records have expired, and
-- the same jobs' entries in the state and project indexes. KEYS[11] the hash of jobs'
-- projects. ARGV[7] most to check, ARGV[8] most to drop, ARGV[9..] the names of the states a
-- job ends in. Returns how many were dropped.
local K_PROJECT_OF = KEYS[11]

-- Removes a job from the indexes of the states a job ends in and from its project's
-- indexes. The record is gone, so which of those states it ended in is unknown: each is
-- tried.
local function unindex(id)
  local project = redis.call('HGET', K_PROJECT_OF, id)
  for i = 9, #ARGV do
    redis.call('ZREM', state_jobs_key(ARGV[i]), id)
    if project then redis.call('ZREM', project_state_jobs_key(project, ARGV[i]), id) end
  end
  if project then
    redis.call('ZREM', project_jobs_key(project), id)
    redis.call('HDEL', K_PROJECT_OF, id)
  end
end

local old = redis.call('ZRANGEBYSCORE', K_JOBS, '-inf', now - retention_ms, 'LIMIT', 0, tonumber(ARGV[7]))
local most = tonumber(ARGV[8])
local dropped = 0
for _, id in ipairs(old) do
  if dropped == most then break end
  if redis.call('EXISTS', job_key(id)) == 0 then
    redis.call('ZREM', K_JOBS, id)
    unindex(id)
    dropped = dropped + 1
  end
end
return dropped
