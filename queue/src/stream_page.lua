-- One page of an event stream, bounded by entries and by bytes (streams.rs,
-- Queue::stream_page). XRANGE alone bounds only the entries, and one entry may hold a 32 KiB
-- output line: a page of 200 such lines would be 6 MiB in the dispatcher's memory per reader.
--
-- KEYS[1]: the stream. ARGV[1]: where to start (`(<id>` after an entry, `-` at the first);
-- ARGV[2]: at most this many entries; ARGV[3]: at most this many bytes (ids, field names and
-- values), except that the first entry is always returned, so a reader always moves on.
-- Returns {more, entries}: more is 1 when the stream holds entries after the page.
local max_entries = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', max_entries + 1)
local page = {}
local more = 0
for i, entry in ipairs(entries) do
  local size = #entry[1]
  for _, part in ipairs(entry[2]) do
    size = size + #part
  end
  if i > max_entries or (i > 1 and size > budget) then
    more = 1
    break
  end
  budget = budget - size
  page[i] = entry
end
return { more, page }
