-- prune_consumers.lua: remove consumers that hold nothing from a stream's consumer group.
-- Every process reads under a name of its own, so names of stopped processes pile up. A
-- consumer is deleted only when it has no pending entry, checked in the same step, because
-- XGROUP DELCONSUMER drops whatever the consumer still held from the group's pending list.
-- Returns how many consumers were removed.
local stream = KEYS[1]
local group = ARGV[1]
local min_idle = tonumber(ARGV[2])  -- only consumers idle this long (ms)
local only = ARGV[3]                -- non-empty: only this consumer (a process stopping)

if redis.call('EXISTS', stream) == 0 then
  return 0
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
if not ok then
  return 0  -- no such group: nothing to prune
end
local removed = 0
for _, info in ipairs(consumers) do
  local fields = {}
  for i = 1, #info, 2 do
    fields[info[i]] = info[i + 1]
  end
  if (only == '' or fields['name'] == only) and tonumber(fields['pending']) == 0
      and tonumber(fields['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, fields['name'])
    removed = removed + 1
  end
end
return removed
