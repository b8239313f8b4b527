-- Cancels a job. KEYS[11] the job's record, KEYS[12] its events. ARGV[7] id, ARGV[8] reason.
-- Returns {'cancelled', handle JSON ('' if nothing runs)}, {'finished', state} or {'missing'}.
local id = ARGV[7]
local f = redis.call('HMGET', KEYS[11], F_STATE, F_ATTEMPT, F_HANDLE)
local state = f[1]
if not state then return { 'missing' } end
if TERMINAL[state] then return { 'finished', state } end
finish(id, state, 'cancelled', f[2], ARGV[8])
local handle = ''
if LIVE[state] then handle = f[3] or '' end
return { 'cancelled', handle }
