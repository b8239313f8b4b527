-- Records one entry of the delivery journal and keeps the journal bounded (deliveries.rs,
-- Queue::record_delivery): in one call, so an entry is never in the index without its
-- record, and the bounds hold after every delivery whichever dispatcher took it.
--
-- KEYS[1]: the index (`deliveries`, scored by when each delivery came, in ms).
-- KEYS[2]: the new entry's record (`delivery:{id}`).
-- KEYS[3]: the record of the delivery this one replays, when the replay made a job; else
--          the new record again (then nothing is marked).
-- ARGV[1]: the entry id; ARGV[2]: now (ms); ARGV[3]: how long entries are kept (ms);
-- ARGV[4]: the most entries kept; ARGV[5]: the record key of an entry without its id
-- (`<prefix>delivery:`: entry ids are generated, [0-9a-z] only, so they need no encoding);
-- ARGV[6]: the field that names the job a replay made; ARGV[7]: that job ('' for none);
-- ARGV[8..]: the new record's fields and values.
-- Each call drops at most BATCH old entries, so a lowered cap is reached over a few
-- deliveries rather than in one long call.
local BATCH = 1000
local now = tonumber(ARGV[2])
local keep_ms = tonumber(ARGV[3])
local max_entries = tonumber(ARGV[4])

redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[2], keep_ms)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ARGV[7] ~= '' and KEYS[3] ~= KEYS[2] and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
end

local function drop(ids)
  if #ids == 0 then
    return
  end
  for _, id in ipairs(ids) do
    redis.call('DEL', ARGV[5] .. id)
  end
  redis.call('ZREM', KEYS[1], unpack(ids))
end

drop(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - keep_ms), 'LIMIT', 0, BATCH))
local excess = redis.call('ZCARD', KEYS[1]) - max_entries
if excess > 0 then
  drop(redis.call('ZRANGE', KEYS[1], 0, math.min(excess, BATCH) - 1))
end
return redis.call('ZCARD', KEYS[1])
