-- Puts a message from people into a job's inbox, for its agent (steering it while it runs).
-- KEYS[11] the job's record, KEYS[12] its events, KEYS[13] its inbox.
-- ARGV[7] id, ARGV[8] the message, ARGV[9] who sent it, ARGV[10] the most an inbox takes.
-- Returns {'sent', its number (from 1)}, {'ended', state}, {'full'} or {'missing'}.
local K_JOB = KEYS[11]
local id = ARGV[7]
local f = redis.call('HMGET', K_JOB, F_STATE, F_INBOX, F_TIMEOUT_SECS)
local state = f[1]
if not state then return { 'missing' } end
if TERMINAL[state] then return { 'ended', state } end
local seq = tonumber(f[2] or 0) + 1
if seq > tonumber(ARGV[10]) then return { 'full' } end
redis.call('HSET', K_JOB, F_INBOX, seq)
local message = cjson.encode({ seq = seq, text = ARGV[8], by = ARGV[9], at = now })
redis.call('RPUSH', KEYS[13], message)
-- Kept while the job may still run (a week, or four of its time limits), then as long as an
-- ended job is.
local alive_ms = math.max(tonumber(f[3] or 0) * 4000, 7 * 86400000)
redis.call('PEXPIRE', KEYS[13], alive_ms + retention_ms)
emit_line(id, '{"type":"message",' .. string.sub(message, 2))
return { 'sent', tostring(seq) }
