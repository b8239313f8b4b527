-- Spends an attempt's one-time credential. KEYS[11] the job's record.
-- ARGV[7] attempt, ARGV[8] the digest of the runner's nonce.
-- Returns 'granted' (the first exchange, or the same nonce again: a retry after a lost
-- answer), 'spent' (exchanged before with another nonce), or 'gone' (no such job, another
-- attempt is current, or the attempt is no longer live).
local K_JOB = KEYS[11]
local attempt = ARGV[7]
local mine = attempt .. ':' .. ARGV[8]
local f = redis.call('HMGET', K_JOB, F_STATE, F_ATTEMPT, F_CREDENTIAL)
if not f[1] then return 'gone' end
if f[3] == mine then return 'granted' end
if f[2] ~= attempt or not LIVE[f[1]] then return 'gone' end
if f[3] and string.sub(f[3], 1, #attempt + 1) == attempt .. ':' then return 'spent' end
redis.call('HSET', K_JOB, F_CREDENTIAL, mine)
return 'granted'
