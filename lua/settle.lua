-- settle.lua: record a batch of attempts of one partner and finish the messages that are done
-- (delivered or dead-lettered), as one step: a message is acknowledged, deleted and forgotten
-- together, so a crash never leaves one acknowledged but still due, or deleted but pending.
-- Returns the ms since which every attempt failed (0 when one of this batch succeeded).
local stream = KEYS[1]         -- notifier:{id}:stream
local due = KEYS[2]            -- notifier:{id}:due
local history = KEYS[3]        -- notifier:{id}:history
local attempts = KEYS[4]       -- notifier:{id}:attempts
local failing = KEYS[5]        -- notifier:{id}:failing
local group = ARGV[1]
local kept = ARGV[2]           -- attempts kept per partner
local now = ARGV[3]
local any_ok = ARGV[4] == '1'
local done = tonumber(ARGV[5]) -- how many message ids follow; the attempt records come after

if done > 0 then
  local ids = {unpack(ARGV, 6, 5 + done)}
  redis.call('XACK', stream, group, unpack(ids))
  redis.call('XDEL', stream, unpack(ids))
  redis.call('ZREM', due, unpack(ids))
  redis.call('HDEL', history, unpack(ids))
end
for i = 6 + done, #ARGV do
  redis.call('XADD', attempts, 'MAXLEN', '~', kept, '*', 'a', ARGV[i])
end
if any_ok then
  redis.call('DEL', failing)
  return 0
end
redis.call('SET', failing, now, 'NX')
return tonumber(redis.call('GET', failing))
