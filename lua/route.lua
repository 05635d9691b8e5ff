-- route.lua: fan one ingress entry out to its partners' streams and acknowledge it, atomically.
-- A router that dies before this runs leaves the entry pending (another router claims it); one
-- that dies after has routed it completely. XACK returning 0 means another router already did
-- the work, so a claimed entry is never fanned out twice.
local ingress = KEYS[1]        -- the ingress stream
local ready = KEYS[2]          -- notifier:ready
local leases = KEYS[3]         -- notifier:leases
local dead = KEYS[4]           -- notifier:dead
-- KEYS[5..]: for partner i, its stream at 3 + 2i and its dedupe marker at 4 + 2i
local group = ARGV[1]
local entry_id = ARGV[2]
local now = tonumber(ARGV[3])
local dedupe_ttl = tonumber(ARGV[4])  -- 0: the producer gave no id, nothing to dedupe
local payload = ARGV[5]               -- the encoded Message, or the dead letter's reason
local wake = ARGV[6]                  -- per partner '1' (enabled: schedule it) or '0'
local dead_reason = ARGV[7]           -- non-empty: the entry is malformed
local dead_max = ARGV[8]
-- ARGV[9..]: partner ids, in the order of their keys

--@include wake_partner

if redis.call('XACK', ingress, group, entry_id) == 0 then
  return -1
end
-- routed entries are not kept: the partner streams hold what is still to be delivered
redis.call('XDEL', ingress, entry_id)

if dead_reason ~= '' then
  redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*', 'reason', dead_reason,
             'entry_id', entry_id, 'entry', payload)
  return 0
end

local routed = 0
for i = 1, #ARGV - 8 do
  local stream = KEYS[3 + 2 * i]
  local seen = KEYS[4 + 2 * i]
  local partner = ARGV[8 + i]
  if dedupe_ttl == 0 or redis.call('SET', seen, '1', 'NX', 'EX', dedupe_ttl) then
    -- A script that fails half-way keeps what it wrote, and the entry is acknowledged already:
    -- a partner stream that refuses the message (a key of the wrong type) gets its message
    -- dead-lettered, replayable, instead of failing the fan-out to everyone.
    local appended, err = pcall(redis.call, 'XADD', stream, '*', 'm', payload)
    if appended then
      routed = routed + 1
      if string.sub(wake, i, i) == '1' then
        wake_partner(ready, leases, partner, now)
      end
    else
      redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*',
                 'reason', 'could not append to the partner stream: ' .. tostring(err.err or err),
                 'partner', partner, 'message', payload, 'attempts', '[]')
    end
  end
end
return routed
