-- Extends the lease of an attempt the spawner still sees alive.
-- KEYS[11] the job's record. ARGV[7] id, ARGV[8] attempt, ARGV[9] new deadline (ms).
-- Returns 1 if extended.
local f = redis.call('HMGET', KEYS[11], F_STATE, F_ATTEMPT)
if not LIVE[f[1]] or tonumber(f[2]) ~= tonumber(ARGV[8]) then return 0 end
redis.call('ZADD', K_RUNNING, 'XX', tonumber(ARGV[9]), ARGV[7])
return 1
