-- Extends the lease of an attempt the spawner still sees alive.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] new deadline (ms). Returns 1 if extended.
local id = ARGV[7]
local f = redis.call('HMGET', job_key(id), 'state', 'attempt')
if (f[1] ~= 'starting' and f[1] ~= 'running') or tonumber(f[2]) ~= tonumber(ARGV[8]) then return 0 end
redis.call('ZADD', K_RUNNING, 'XX', tonumber(ARGV[9]), id)
return 1
