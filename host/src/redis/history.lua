-- Read a channel's history after a position, and its head. Creates the
-- channel's epoch if it has none, so a position read now can be checked
-- later (an epoch is a fact about a channel, not about its messages).
--
-- KEYS[1]  the channel's stream
-- KEYS[2]  the channel's meta hash (see publish.lua)
-- ARGV[1]  the epoch of the reader's position ("" when it has none)
-- ARGV[2]  the offset of the reader's position (read after it)
-- ARGV[3]  most entries to return (0: only the head)
-- ARGV[4]  meta TTL, seconds
-- ARGV[5]  an epoch to use if the channel has none
-- ARGV[6]  now, ms since the Unix epoch (entries older than the age go)
-- Returns {top, epoch, entries}; entries are [id, [field, value, ...]].
local meta = redis.call('HMGET', KEYS[2], 'e', 's', 'a')
local epoch, top, age = meta[1], tonumber(meta[2] or '0'), tonumber(meta[3] or '0')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  top = 0
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[3] == '0' then
  return {top, epoch, {}}
end
-- A position from another epoch reads from the oldest entry kept.
local start = '-'
if ARGV[1] == epoch then
  start = tostring(tonumber(ARGV[2]) + 1)
end
local want = tonumber(ARGV[3])
local oldest = tonumber(ARGV[6]) - age
local entries = {}
-- Entries past the age are at the front: skip them, then take the rest.
while #entries < want do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', want - #entries)
  if #batch == 0 then
    break
  end
  for _, entry in ipairs(batch) do
    local fields, fresh = entry[2], true
    for i = 1, #fields, 2 do
      if age > 0 and fields[i] == 't' and tonumber(fields[i + 1]) < oldest then
        fresh = false
      end
    end
    if fresh then
      table.insert(entries, entry)
    end
  end
  start = '(' .. batch[#batch][1]
end
return {top, epoch, entries}
