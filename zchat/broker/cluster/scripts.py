"""The Lua that makes each cluster step atomic. Every key a script touches is in
KEYS and shares one hash tag, so the scripts run unchanged on a Redis Cluster.

Member values in a room's roster are ``NODE "\\n" NICK``: node ids are plain
(``[A-Za-z0-9_.-]``), nicks have no control characters.
"""

from __future__ import annotations

from typing import Final

#: Allocate a room's next seq, finish the envelope, add it to the history stream,
#: update the roster or topic, remember the say id, publish to the nodes.
#: KEYS: meta, hist, members, said (any key of the room's slot when there is no say id)
#: ARGV: head, epoch, maxlen, op, member, value, ttl_ms, channel, only_node,
#:       new_member, has_say
#: Returns {status, seq, epoch}: status "ok" (published at seq), "dup" (this say id
#: was published at seq), "moved" (join of a member another node held: the roster
#: now points here, nothing published), "skip" (leave of a member not held by
#: only_node, or not there: nothing published).
APPEND: Final = r"""
local meta, hist, members, said = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local head, epoch, maxlen, op = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local member, value, ttl, channel = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local only, newmember, hassay = ARGV[9], ARGV[10], ARGV[11]
local cur = redis.call('HGET', meta, 'epoch')
if not cur then
  redis.call('DEL', hist, members)
  redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
  cur = epoch
end
if hassay == '1' then
  local seen = redis.call('GET', said)
  if seen then return {'dup', tonumber(seen), cur} end
end
if op == 'join' then
  local held = redis.call('HGET', members, member)
  redis.call('HSET', members, member, value)
  if held then return {'moved', 0, cur} end
elseif op == 'leave' then
  local held = redis.call('HGET', members, member)
  if not held then return {'skip', 0, cur} end
  if only ~= '' and string.sub(held, 1, #only + 1) ~= only .. '\n' then
    return {'skip', 0, cur}
  end
  redis.call('HDEL', members, member)
elseif op == 'nick' then
  redis.call('HDEL', members, member)
  redis.call('HSET', members, newmember, value)
elseif op == 'topic' then
  redis.call('HSET', meta, 'topic', value)
end
local seq = redis.call('HINCRBY', meta, 'top', 1)
local env = head .. cmsgpack.pack(seq)
redis.call('XADD', hist, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', env)
if hassay == '1' then redis.call('SET', said, seq, 'PX', ttl) end
redis.call('PUBLISH', channel, seq .. ':' .. op .. ':' .. env)
return {'ok', seq, cur}
"""

#: Register a nick on a node: free, or the same client (resume token), or the same
#: CURVE key, or held by a node the caller found dead.
#: KEYS: nick key. ARGV: node, nick, new resume token, given resume token, CURVE key,
#: dead node. Returns {"ok", previous node or ""} or {"taken", holder node}.
CLAIM_NICK: Final = r"""
local k = KEYS[1]
local holder = redis.call('HGET', k, 'node')
if holder then
  local ok = false
  if ARGV[4] ~= '' and redis.call('HGET', k, 'resume') == ARGV[4] then ok = true end
  if ARGV[5] ~= '' and redis.call('HGET', k, 'key') == ARGV[5] then ok = true end
  if ARGV[6] ~= '' and holder == ARGV[6] then ok = true end
  if not ok then return {'taken', holder} end
else
  holder = ''
end
redis.call('HSET', k, 'node', ARGV[1], 'nick', ARGV[2], 'resume', ARGV[3], 'key', ARGV[5])
return {'ok', holder}
"""

#: Free a nick only if this session (node and resume token) still holds it.
#: KEYS: nick key. ARGV: node, resume token. Returns 1 if freed.
RELEASE_NICK: Final = r"""
if redis.call('HGET', KEYS[1], 'node') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'resume') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: Publish a direct message on the channel of the node holding the recipient, if
#: that node still holds its lease. Keyed on the lease, in the node's hash slot: on
#: a Redis Cluster it runs on the shard its subscription connection is on (redis-py
#: connects a cluster subscription to the shard of its first channel, the node's
#: own), so PUBLISH counts that node's subscription.
#: KEYS: the node's lease. ARGV: channel, payload. Returns the subscriptions
#: reached (0: the node's connection is gone), or -1: its lease is gone.
DIRECT: Final = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
