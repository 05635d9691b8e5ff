-- forget_reports.lua: remove the reports of processes that stopped reporting from
-- `notifier:processes`, each only if it is still the report that was read as stale: a process
-- that reported again meanwhile keeps its report (an HDEL of what an HGETALL found would have
-- removed it). Returns how many were removed.
local processes = KEYS[1]
-- ARGV: name, the stale report read, name, report, ...
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', processes, ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', processes, ARGV[i])
  end
end
return removed
