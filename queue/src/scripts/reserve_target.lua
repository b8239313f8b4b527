-- Chooses the spawner target of an admitted attempt and takes one of its slots.
-- KEYS[11] the job's record. ARGV[7] id, ARGV[8] attempt, then pairs of target name and its
-- cap (0: none), in order of preference.
-- Returns {'chosen', name} (the first with room; or the one this attempt already holds, so
-- a spawn taken over from a dead dispatcher goes where the first one went), {'full'} (none
-- has room) or {'stale'} (the attempt is no longer starting).
local id = ARGV[7]
local f = redis.call('HMGET', KEYS[11], F_STATE, F_ATTEMPT, F_TARGET)
if f[1] ~= 'starting' or tonumber(f[2]) ~= tonumber(ARGV[8]) then return { 'stale' } end
if f[3] and f[3] ~= '' then return { 'chosen', f[3] } end
for i = 9, #ARGV, 2 do
  local name, cap = ARGV[i], tonumber(ARGV[i + 1])
  local slots = target_key(name)
  if cap == 0 or redis.call('SCARD', slots) < cap then
    redis.call('SADD', slots, id)
    redis.call('HSET', KEYS[11], F_TARGET, name)
    return { 'chosen', name }
  end
end
return { 'full' }
