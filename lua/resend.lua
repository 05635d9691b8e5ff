-- resend.lua: send messages to one partner again, each with the same webhook-id and a fresh
-- retry schedule, whatever its state: a copy still waiting (pending or for a retry) is
-- replaced, a dead letter of it is removed, and a new entry goes to the end of the partner's
-- stream. Done in one step per message, so a message is never both waiting twice and never
-- lost. A copy in flight is left to finish: its request is under way. Many messages share a
-- call (a recover sends its batches so), and the partner is woken once for them all.
-- A replay names the dead letter it takes (ARGV[7], with one message id): it is taken once,
-- however many replays of it run at once, and its own copy of the message is sent when the
-- index does not know the message (NOTIFIER_MESSAGE_RETENTION 0, or past it).
-- Returns {1 when the caller should rouse a delivery process else 0, then per message its new
-- entry id, or -1 when neither the index nor the dead letter has it for this partner, or -2
-- when the dead letter named is gone (another replay took it)}.
local stream = KEYS[1]         -- notifier:{id}:stream
local due = KEYS[2]            -- notifier:{id}:due
local inflight = KEYS[3]       -- notifier:{id}:inflight
local history = KEYS[4]        -- notifier:{id}:history
local dead = KEYS[5]           -- the shard's dead letters
local ready = KEYS[6]          -- the shard's ready
local leases = KEYS[7]         -- the shard's leases
local spared = KEYS[8]         -- notifier:{id}:spared
local group = ARGV[1]
local partner = ARGV[2]
local now = tonumber(ARGV[3])
local home = ARGV[4]               -- the prefix of the shard's records (index.lua)
local gen_ms = tonumber(ARGV[5])   -- a generation of producer ids, ms
local retention = tonumber(ARGV[6])
local letter = ARGV[7]             -- the dead letter a replay takes, or ''
-- ARGV[8..]: the message ids, at most a recover batch's worth (one for a replay)

--@include wake_partners
--@include index

-- One message sent again through the index: its new entry id, or -1.
local function resend(message_id)
  local bucket = index_locate(home, message_id, now, gen_ms, now - retention)
  local value = bucket and redis.call('HGET', bucket, message_id)
  if not value then
    return -1
  end
  local copies, event = index_split(value)
  local known = index_copy(copies, partner)
  if not known then
    return -1
  end
  -- a pending copy's state is its entry id; any other a JSON object (see fan_out.lua)
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
  redis.call('HSET', bucket, message_id, index_with(copies, partner, added) .. '\n' .. event)
  return added
end

-- A replay: the dead letter is taken in the step that sends its message again.
local function replay(message_id)
  local found = redis.call('XRANGE', dead, letter, letter)
  if #found == 0 then
    return -2
  end
  local kept = nil
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'message' then
      kept = fields[i + 1]
    end
  end
  local added = -1
  if redis.call('EXISTS', stream) == 1 then
    added = resend(message_id)
  end
  if added == -1 and kept then
    -- the caller checked that the partner exists: a stream without a group yet is fine, the
    -- first take makes the group
    added = redis.call('XADD', stream, '*', 'm', kept)
  end
  if added ~= -1 then
    redis.call('XDEL', dead, letter)
  end
  return added
end

local out, any = {0}, false
if letter ~= '' then
  out[2] = replay(ARGV[8])
  any = type(out[2]) ~= 'number'
elseif redis.call('EXISTS', stream) == 0 then
  for _ = 8, #ARGV do
    out[#out + 1] = -1
  end
  return out
else
  for i = 8, #ARGV do
    out[#out + 1] = resend(ARGV[i])
    any = any or out[#out] ~= -1
  end
end
if any then
  out[1] = wake_partners(ready, leases, {partner}, now)
end
return out
