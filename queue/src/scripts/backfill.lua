-- Indexes jobs stored before the state and project indexes existed: walks K_JOBS oldest
-- first from where the previous call stopped, and puts each job that still has a record in
-- the indexes of its state and its project, as submit and transition do for new jobs.
-- KEYS[11] the hash of jobs' projects, KEYS[12] the walk's position ('<score>:<offset among
-- equal scores>', 'done' at the end). ARGV[7] most jobs to walk.
-- Returns how many jobs it walked, or -1 when the walk had already ended.
local K_PROJECT_OF, K_POSITION = KEYS[11], KEYS[12]
local position = redis.call('GET', K_POSITION)
if position == 'done' then return -1 end
local score, skip = '-inf', 0
if position then
  local at, offset = string.match(position, '^(.+):(%d+)$')
  if at then score, skip = at, tonumber(offset) end
end
local most = tonumber(ARGV[7])
local walked = redis.call('ZRANGEBYSCORE', K_JOBS, score, '+inf', 'WITHSCORES', 'LIMIT', skip, most)
for i = 1, #walked, 2 do
  local id, at = walked[i], walked[i + 1]
  local f = redis.call('HMGET', job_key(id), F_STATE, F_PROJECT)
  local state, project = f[1], f[2]
  if state then
    redis.call('ZADD', state_jobs_key(state), at, id)
    index_project(K_PROJECT_OF, id, project, at)
    if project and project ~= '' then
      redis.call('ZADD', project_state_jobs_key(project, state), at, id)
    end
  end
  if at == score then skip = skip + 1 else score, skip = at, 1 end
end
local count = #walked / 2
if count < most then
  redis.call('SET', K_POSITION, 'done')
else
  redis.call('SET', K_POSITION, score .. ':' .. skip)
end
return count
