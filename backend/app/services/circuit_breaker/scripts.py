"""The breaker's Lua scripts: every state decision runs as one of them, atomically in Redis.

All scripts share a prelude that loads the breaker's state and defines its transitions, so they
share one calling convention:

* KEYS (one hash tag, so one Cluster slot): [1] ``cb:{name}:s`` state hash, [2] ``cb:{name}:w``
  time-window buckets, [3] ``cb:{name}:p`` probe permits (zset scored by expiry), [4]
  ``cb:{name}:c`` count-window batches (list).
* ARGV[1]: the policy as JSON (``BreakerConfig.script_json``); each script's own arguments follow.
* Return: ``{state, generation, remaining_ms, operator, moved, verdict}`` (see ``parse_reply``).

Time is Redis's ``TIME`` (Redis 7 allows it in scripts with effects replication): no clock skew
between the web hosts. The in-process twin of these scripts is ``local.LocalMachine``.
"""

from typing import Any, Final

from app.services.circuit_breaker.state import Snapshot, State, visible_state

# Loads the state hash, defines open()/close()/finish(), and re-opens a HALF_OPEN breaker whose
# oldest probe outlived its permit. Not a script by itself: every script below starts with it.
_PRELUDE: Final = """
local S, W, P, C = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cfg = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', S, 'st', 'gen', 'until', 'opens', 'consec', 'hok', 'op')
local st = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0
local opens = tonumber(h[4]) or 0
local consec = tonumber(h[5]) or 0
local hok = tonumber(h[6]) or 0
local op = h[7] or ''
local moved = ''
local dirty = false
local function open(hold)
  local d = cfg.recovery * math.pow(cfg.backoff, opens)
  if hold > d then d = hold end
  if d > cfg.max_open then d = cfg.max_open end
  st = 'open'; open_until = now + math.floor(d); opens = opens + 1
  consec = 0; hok = 0; gen = gen + 1; moved = 'open'; dirty = true
  redis.call('DEL', W, P, C)
end
local function close()
  st = 'closed'; open_until = 0; opens = 0; consec = 0; hok = 0
  gen = gen + 1; moved = 'closed'; dirty = true
  redis.call('DEL', W, P, C)
end
local function finish(verdict)
  if dirty then
    redis.call('HSET', S, 'st', st, 'gen', gen, 'until', open_until, 'opens', opens,
      'consec', consec, 'hok', hok, 'op', op)
    redis.call('PEXPIRE', S, cfg.ttl)
  end
  local remaining = 0
  if st == 'open' then
    remaining = open_until - now
  elseif st == 'half_open' then
    local first = redis.call('ZRANGE', P, 0, 0, 'WITHSCORES')
    if first[2] and redis.call('ZCARD', P) >= cfg.half_max then
      remaining = tonumber(first[2]) - now
    end
  end
  if remaining < 0 then remaining = 0 end
  return {st, gen, remaining, op, moved, verdict}
end
-- A probe that outlived its permit counts as failed: re-open rather than wedge in HALF_OPEN.
if st == 'half_open' and redis.call('ZCOUNT', P, '-inf', now) > 0 then open(0) end
"""

# KEYS: the four breaker keys. ARGV: [1] policy JSON, [2] generation the counts belong to (-1:
# unknown), [3] calls, [4] failures, [5] slow calls, [6] failures since the batch's last success,
# [7] 1 if the batch had a success, [8] Retry-After hold in ms.
# Counts only apply to an automatic CLOSED breaker of that generation; they may open it.
# Returns the common reply with an empty verdict (with 0 calls: just the current state).
REPORT: Final = (
    _PRELUDE
    + """
local rgen = tonumber(ARGV[2])
local calls = tonumber(ARGV[3])
if st == 'closed' and op == '' and calls > 0 and (rgen < 0 or rgen == gen) then
  local fails, slow = tonumber(ARGV[4]), tonumber(ARGV[5])
  local c, f, s = 0, 0, 0
  if cfg.window_calls > 0 then
    -- Newest batch first; keep just enough batches to cover the last window_calls calls.
    redis.call('LPUSH', C, calls .. ':' .. fails .. ':' .. slow)
    local entries = redis.call('LRANGE', C, 0, -1)
    local keep = #entries
    for i = 1, #entries do
      local bc, bf, bs = string.match(entries[i], '(%d+):(%d+):(%d+)')
      c, f, s = c + tonumber(bc), f + tonumber(bf), s + tonumber(bs)
      if c >= cfg.window_calls then keep = i; break end
    end
    redis.call('LTRIM', C, 0, keep - 1)
    redis.call('PEXPIRE', C, cfg.ttl)
  else
    local sec = math.floor(now / 1000)
    redis.call('HINCRBY', W, 'c' .. sec, calls)
    if fails > 0 then redis.call('HINCRBY', W, 'f' .. sec, fails) end
    if slow > 0 then redis.call('HINCRBY', W, 's' .. sec, slow) end
    redis.call('PEXPIRE', W, cfg.window * 1000 + 1000)
    local all = redis.call('HGETALL', W)
    for i = 1, #all, 2 do
      if tonumber(string.sub(all[i], 2)) <= sec - cfg.window then
        redis.call('HDEL', W, all[i])
      else
        local kind, v = string.sub(all[i], 1, 1), tonumber(all[i + 1])
        if kind == 'c' then c = c + v elseif kind == 'f' then f = f + v else s = s + v end
      end
    end
  end
  if tonumber(ARGV[7]) == 1 then consec = tonumber(ARGV[6]) else consec = consec + fails end
  dirty = true
  if consec >= cfg.threshold
    or (c >= cfg.min_calls and (f * 1000 >= cfg.rate * c or s * 1000 >= cfg.slow_rate * c)) then
    open(tonumber(ARGV[8]))
  end
end
return finish('')
"""
)

# KEYS: the four breaker keys. ARGV: [1] policy JSON, [2] permit id.
# Moves an OPEN breaker whose open period is over to HALF_OPEN, then admits the call or not.
# Returns the common reply; verdict 'permit' (run as a probe: the permit is held until its TTL),
# 'pass' (closed or disabled: run as a normal call) or 'reject'.
ACQUIRE: Final = (
    _PRELUDE
    + """
if op == 'forced_open' then return finish('reject') end
if op == 'disabled' then return finish('pass') end
if st == 'open' and now >= open_until then
  st = 'half_open'; hok = 0; gen = gen + 1; moved = 'half_open'; dirty = true
  redis.call('DEL', P)
end
if st == 'closed' then return finish('pass') end
if st == 'open' then return finish('reject') end
if redis.call('ZCARD', P) < cfg.half_max then
  redis.call('ZADD', P, now + cfg.permit_ttl, ARGV[2])
  redis.call('PEXPIRE', P, cfg.ttl)
  return finish('permit')
end
return finish('reject')
"""
)

# KEYS: the four breaker keys. ARGV: [1] policy JSON, [2] permit id, [3] outcome ('success' |
# 'failure' | 'ignore'), [4] Retry-After hold in ms.
# An expired permit was already counted as a failure by the prelude: its outcome is ignored.
# Returns the common reply with an empty verdict.
RELEASE: Final = (
    _PRELUDE
    + """
if redis.call('ZREM', P, ARGV[2]) == 1 and st == 'half_open' then
  if ARGV[3] == 'success' then
    hok = hok + 1; dirty = true
    if hok >= cfg.success then close() end
  elseif ARGV[3] == 'failure' then
    open(tonumber(ARGV[4]))
  end
end
return finish('')
"""
)

# KEYS: the four breaker keys. ARGV: [1] policy JSON, [2] operator state: '' (automatic),
# 'forced_open' or 'disabled'. Any change resets the automatic state to CLOSED.
# Returns the common reply with an empty verdict.
OPERATOR: Final = (
    _PRELUDE
    + """
if ARGV[2] ~= op then
  op = ARGV[2]
  close()
  if op ~= '' then moved = op end
end
return finish('')
"""
)

SCRIPTS: Final = {
    "report": REPORT,
    "acquire": ACQUIRE,
    "release": RELEASE,
    "operator": OPERATOR,
}


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_reply(reply: Any) -> Snapshot:
    """The Snapshot of a script's reply ``{state, generation, remaining_ms, operator, moved,
    verdict}``."""
    state, generation, remaining_ms, operator, moved, verdict = reply
    moved = _decode(moved)
    return Snapshot(
        state=visible_state(_decode(state), _decode(operator)),
        generation=int(generation),
        remaining=int(remaining_ms) / 1000,
        moved=State(moved) if moved else None,
        verdict=_decode(verdict),
    )
