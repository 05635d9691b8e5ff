-- resend.lua: send one message to one partner again, with the same webhook-id and a fresh
-- retry schedule, whatever its state: a copy still waiting (pending or for a retry) is
-- replaced, a dead letter of it is removed, and a new entry goes to the end of the partner's
-- stream. Done in one step, so the message is never both waiting twice and never lost. A copy
-- in flight is left to finish: its request is under way.
-- Returns {1, new entry id, 1 when the caller should rouse a delivery process else 0}, or
-- {-1} when the index does not know the message for this partner.
local stream = KEYS[1]         -- notifier:{id}:stream
local due = KEYS[2]            -- notifier:{id}:due
local inflight = KEYS[3]       -- notifier:{id}:inflight
local history = KEYS[4]        -- notifier:{id}:history
local index = KEYS[5]          -- the message's index hash (Shard.message_index)
local dead = KEYS[6]           -- the shard's dead letters
local ready = KEYS[7]          -- the shard's ready
local leases = KEYS[8]         -- the shard's leases
local spared = KEYS[9]         -- notifier:{id}:spared
local group = ARGV[1]
local partner = ARGV[2]
local now = tonumber(ARGV[3])
local message_id = ARGV[4]
local field = message_id .. '\t' .. partner  -- the copy's field in `index`

--@include wake_partners

local event = redis.call('HGET', index, message_id)
local known = redis.call('HGET', index, field)
if not event or not known or redis.call('EXISTS', stream) == 0 then
  return {-1}
end
-- a pending copy's field is its entry id; any other state is a JSON object (see fan_out.lua)
local state = {e = known}
if string.sub(known, 1, 1) == '{' then
  state = cjson.decode(known)
end
if state.e and not redis.call('ZSCORE', inflight, state.e) then
  redis.call('XACK', stream, group, state.e)
  redis.call('XDEL', stream, state.e)
  redis.call('ZREM', due, state.e)
  redis.call('HDEL', history, state.e)
  redis.call('HDEL', spared, state.e)
end
if state.x then
  redis.call('XDEL', dead, state.x)
end
local added = redis.call('XADD', stream, '*', 'm', event)
redis.call('HSET', index, field, added)
return {1, added, wake_partners(ready, leases, {partner}, now)}
