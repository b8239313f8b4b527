-- Puts an admitted attempt back in the queue, to be admitted again after a delay, when none
-- of its targets can take it now (full or unhealthy). The attempt is not used up.
-- KEYS[11] the job's record, KEYS[12] its events. ARGV[7] id, ARGV[8] attempt,
-- ARGV[9] reason, ARGV[10] delay (ms), ARGV[11] queue entry to ack ('' for none).
-- Returns 'deferred' or 'stale'.
local id = ARGV[7]
ack(ARGV[11])
local f = redis.call('HMGET', KEYS[11], F_STATE, F_ATTEMPT, F_HANDLE)
if f[1] ~= 'starting' or tonumber(f[2]) ~= tonumber(ARGV[8]) then return 'stale' end
if f[3] and f[3] ~= '' then return 'stale' end
release(id)
redis.call('ZADD', K_DELAYED, now + tonumber(ARGV[10]), id)
transition(id, 'starting', 'queued', f[2], ARGV[9], nil, { F_TARGET, '', F_REASON, ARGV[9] })
return 'deferred'
