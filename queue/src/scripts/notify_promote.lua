-- Puts replies whose retry is due back in the outbox. ARGV[7] most to move.
-- Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', K_NOTIFY_DELAYED, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, member in ipairs(due) do
  redis.call('ZREM', K_NOTIFY_DELAYED, member)
  redis.call('XADD', K_NOTIFY, '*', unpack(cjson.decode(member).fields))
end
return #due
