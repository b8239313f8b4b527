-- A reply that could not be delivered now: its outbox entry is acknowledged and removed,
-- and the same reply waits in notify:delayed until it is due, in one step, so it is neither
-- lost nor sent twice by two dispatchers.
-- ARGV[7] entry id, ARGV[8] due (ms), ARGV[9..] the reply's field/value pairs (its tries
-- already counted).
-- Returns 1, or 0 when the entry was no longer this notifier's to defer.
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
if redis.call('XACK', K_NOTIFY, NOTIFY_GROUP, ARGV[7]) == 1 then
  redis.call('XDEL', K_NOTIFY, ARGV[7])
  redis.call('ZADD', K_NOTIFY_DELAYED, tonumber(ARGV[8]), cjson.encode({ entry = ARGV[7], fields = fields }))
  return 1
end
return 0
