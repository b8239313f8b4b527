-- Cancels a job. ARGV[7] id, ARGV[8] reason.
-- Returns {'cancelled', handle JSON ('' if nothing runs)}, {'finished', state} or {'missing'}.
local id = ARGV[7]
local f = redis.call('HMGET', job_key(id), 'state', 'attempt', 'handle')
local state = f[1]
if not state then return { 'missing' } end
if TERMINAL[state] then return { 'finished', state } end
finish(id, state, 'cancelled', f[2], ARGV[8])
local handle = ''
if state == 'starting' or state == 'running' then handle = f[3] or '' end
return { 'cancelled', handle }
