-- Read a channel's newest entries, newest first, and its head. Creates the
-- channel's epoch if it has none (as history.lua does).
--
-- KEYS[1]  the channel's stream
-- KEYS[2]  the channel's meta hash (see publish.lua)
-- ARGV[1]  most entries to return
-- ARGV[2]  meta TTL, seconds
-- ARGV[3]  an epoch to use if the channel has none
-- ARGV[4]  now, ms since the Unix epoch (entries older than the age go)
-- Returns {top, epoch, entries}; entries are [id, [field, value, ...]].
local meta = redis.call('HMGET', KEYS[2], 'e', 's', 'a')
local epoch, top, age = meta[1], tonumber(meta[2] or '0'), tonumber(meta[3] or '0')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  top = 0
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
local want = tonumber(ARGV[1])
if want == 0 then
  return {top, epoch, {}}
end
local oldest = tonumber(ARGV[4]) - age
local entries = {}
-- Newest first: the first entry past the age ends the read.
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', want)) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if age > 0 and fields[i] == 't' and tonumber(fields[i + 1]) < oldest then
      return {top, epoch, entries}
    end
  end
  table.insert(entries, entry)
end
return {top, epoch, entries}
