//! The Lua scripts that make each read-then-write [`super::RedisStore`]
//! method one atomic step on the server. Each runs by EVALSHA, with EVAL
//! when the server does not know it yet (the `redis` crate's `Script`).
//! Numbers that decide anything (now, expiries, windows) come from the
//! caller as arguments: the server's clock is never consulted.
//!
//! A challenge lives in the master's memory only. What a script writes to
//! one goes neither to the append-only file nor to the replicas
//! (`redis.set_repl(redis.REPL_NONE)`); its deletion goes to both. A
//! login's challenge is a dozen fields written and deleted within a
//! minute. Writing them to the file and to every replica more than
//! doubled what each login cost there: a bench-radius login added 763
//! bytes to the append-only file, and 310 without the challenge (and
//! with a window's TTL set once a bucket, see `WINDOW`). A larger file
//! is also rewritten (a fork of the server) sooner.
//! Nothing of a challenge has to outlive the master either: a restart or
//! a failover ends the logins in progress, and their users ask for a new
//! code. Lockouts, SMS counts, numbers, backup codes, opt-outs and
//! languages are written everywhere as before.
//!
//! A copy can still reach a replica or the file in a snapshot: a
//! replica's full sync, an append-only file rewrite. So that such a copy
//! does not bring back a code that was used, replaced or tried, every
//! change to a challenge deletes it there: `unpersist` deletes it
//! everywhere and writes it again on the master only, before the change.
//! What a failover or a restart brings back is then at most a challenge
//! as it was sent, untried, with its own expiry (unless the deletion
//! itself is lost, as any write can be in the last second before a crash
//! or within the replicas' lag).

use std::sync::LazyLock;

use redis::{
    ConnectionLike, ErrorKind, FromRedisValue, RedisResult, RedisWrite, Script, ServerErrorKind,
    ToRedisArgs,
};

/// Compares two MACs in time that does not depend on where they differ:
/// it compares their SHA-1 digests (`redis.sha1hex`, in C), whose common
/// prefix says nothing about that of the MACs (the "double hashing"
/// comparison). A byte loop in Lua did the same in about 9 µs of the
/// server's time per call, `redis.sha1hex` twice in about 1.
const EQ: &str = r"
local function eq(a, b)
  if not a or #a ~= #b then return false end
  return redis.sha1hex(a) == redis.sha1hex(b)
end
";

/// Scripts that write a challenge start with this. On Redis 6, `set_repl`
/// needs script effects replication, which `replicate_commands` turns on
/// (it is the default there, and the only mode from 7.0 on, where the
/// call does nothing). `unpersist(k)` deletes challenge `k` from the
/// append-only file and the replicas and keeps it here: after it, this
/// script's writes stay on this server, so a script calls it just
/// before its writes to `k`, and writes nothing else after.
const MEMORY: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local function unpersist(k)
  local h = redis.call('HGETALL', k)
  local ttl = redis.call('PTTL', k)
  redis.call('DEL', k)
  redis.set_repl(redis.REPL_NONE)
  if #h > 0 then
    redis.call('HSET', k, unpack(h))
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  end
end
";

/// Writes a challenge from ARGV[1..13]: user, service, MAC, masked phone,
/// created, sent, expires, attempts, resends, step, has pending, pending,
/// TTL. A challenge of another login with the same id that has not
/// expired at `created` is a conflict (answer 3). `conflict` also says
/// whether a challenge is there at all (every challenge has its `u`), so
/// that `put` deletes the old one only when there is one (everywhere: a
/// snapshot may hold a copy); most logins write a new id. The new one is
/// written on the master only (see the module doc). Needs [`MEMORY`].
const PUT: &str = r"
local function conflict(k, A)
  local old = redis.call('HMGET', k, 'u', 's', 'e')
  if not old[1] then return false, false end
  return tonumber(old[3]) > tonumber(A[5]) and (old[1] ~= A[1] or old[2] ~= A[2]), true
end
local function put(k, A, old)
  if old then redis.call('DEL', k) end
  redis.set_repl(redis.REPL_NONE)
  redis.call('HSET', k, 'u', A[1], 's', A[2], 'm', A[3], 'k', A[4], 'c', A[5], 't', A[6],
    'e', A[7], 'a', A[8], 'r', A[9], 'p', A[10])
  if A[11] == '1' then redis.call('HSET', k, 'n', A[12]) end
  redis.call('PEXPIRE', k, A[13])
  redis.set_repl(redis.REPL_ALL)
end
";

/// Takes one SMS from every window, the rule of `limits::decide` in Lua.
/// `ku` the user's sends (at -> n), `kw` the keyed windows' hashes (bucket
/// -> n, and the running total, see below), A[o..]: now, user window
/// start, user limit, user mode, forget sends up to here, back-off first
/// (0: none), back-off max, back-off mode, sends TTL, window count; then
/// per window its oldest bucket (not counted), this bucket, limit,
/// mode, TTL, what this SMS adds (cost), breaker (1: the budget's
/// window); then, if a window is the budget's, the user, when its trip
/// would end and the trip's TTL, with the breaker's hash (`a` at, `u`
/// until, `n` user, `s` spent) as the last key. Modes: 1 monitor, 0
/// enforce. Answers {r, monitored…}: r 0 granted, 1 user, 2 back-off,
/// 10 + i window i (from 0) refused; the monitored in the same codes;
/// after a 2, when the next SMS is allowed; after a refusal by the
/// budget, 1 if this send tripped the breaker.
///
/// A window is not summed bucket by bucket on each SMS: a window that
/// has seen an SMS a minute for an hour holds 62 buckets (60 counted,
/// two not yet forgotten), and reading and adding them in Lua on every
/// SMS raised redis-server's time per login by about two thirds
/// (`scripts/bench-radius.sh`, which fills every window with an hour of
/// sends; `FILL=0` leaves them empty). Beside its buckets, a window's
/// hash keeps the sum of the buckets after a boundary (field `-1e15`),
/// that boundary (`-2e15`), and the newest bucket already forgotten
/// (`-3e15`). An SMS reads those three; when
/// its oldest counted bucket has moved past the boundary, it takes the
/// buckets that left from the sum, and forgets those that no window of
/// this bucket size counts any more (`limits::bucket_stale`, as
/// before); a host whose clock is behind the boundary adds back the few
/// buckets it still counts. The sum is rebuilt from the buckets when it
/// is missing or the boundary is more than 64 buckets behind (a
/// window idle that long). The fields are numbers below any bucket (a
/// bucket is the time over its size, never negative) so that a host
/// still running the version that summed every bucket takes them for
/// stale buckets and deletes them before it counts; the next host
/// of this version then finds no sum and rebuilds it: hosts of both
/// versions can share a Redis during an upgrade.
///
/// Loops run over hash entries (a user's sends, the buckets that left a
/// window), never over bytes. A window's TTL is set when its bucket is
/// new (the count comes back as just this SMS's): a bucket counts until
/// the window has passed its start, so the TTL set at its first SMS (the
/// window from then, or more) covers it, and the newest bucket's covers
/// the older ones' (and the sum's, in the same hash). One PEXPIRE a
/// bucket, not one an SMS, for the append-only file to write; this
/// bucket's count (read with the sum) and the sum go in one HSET.
const WINDOW: &str = r"
local SUM, FROM, GONE = '-1e15', '-2e15', '-3e15'
local function fields(from, to)
  local f = {}
  for b = from, to do f[#f + 1] = b end
  return f
end
local function sum(k, from, to)
  local n = 0
  if from > to then return n end
  local c = redis.call('HMGET', k, unpack(fields(from, to)))
  for i = 1, #c do if c[i] then n = n + tonumber(c[i]) end end
  return n
end
local function rebuild(k, oldest, stale, cur)
  local t, c, gone = 0, false, {}
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    if b and b >= 0 then
      if b <= stale then gone[#gone + 1] = all[i]
      elseif b > oldest then t = t + tonumber(all[i + 1]) end
      if b == cur then c = tonumber(all[i + 1]) end
    end
  end
  if #gone > 0 then redis.call('HDEL', k, unpack(gone)) end
  return {t = t, o = oldest, d = stale, c = c, dirty = true, exists = #all > 0}
end
local function counted(k, oldest, cur, bucket)
  local stale = cur - 62
  local f = redis.call('HMGET', k, SUM, FROM, GONE, bucket)
  local t, o, d = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  local s
  if not (t and o and d) or oldest - o > 64 or stale - d > 64 then
    s = rebuild(k, oldest, stale, cur)
  else
    s = {t = t, o = o, d = d, c = tonumber(f[4]), dirty = false, exists = true}
    if oldest > o then
      s.t = s.t - sum(k, o + 1, oldest)
      s.o = oldest
      s.dirty = true
    end
    if stale > d then
      redis.call('HDEL', k, unpack(fields(d + 1, stale)))
      s.d = stale
      s.dirty = true
    end
  end
  local g = s.t
  if oldest < s.o then g = g + sum(k, math.max(oldest, s.d) + 1, s.o) end
  return g, s
end
local function keep(k, s)
  redis.call('HSET', k, SUM, s.t, FROM, s.o, GONE, s.d)
end
-- What the windows counted so far learnt (a moved boundary, forgotten
-- buckets) is kept even when the SMS is refused.
local function settle(kw, st)
  for w = 1, #st do
    if st[w].dirty and st[w].exists then keep(kw[w], st[w]) end
  end
end
local function reserve(ku, kw, A, o)
  local now = tonumber(A[o])
  local usince = tonumber(A[o + 1])
  local prune = tonumber(A[o + 4])
  local bfirst = tonumber(A[o + 5])
  local mon = {}
  local function hit(code, mode)
    if mode == '1' then mon[#mon + 1] = code return false end
    return true
  end
  local n = 0
  local list = {}
  local all = redis.call('HGETALL', ku)
  for i = 1, #all, 2 do
    local at = tonumber(all[i])
    if at <= prune then redis.call('HDEL', ku, all[i])
    else
      local k = tonumber(all[i + 1])
      if at > usince then n = n + k end
      if bfirst > 0 then list[#list + 1] = {at, k} end
    end
  end
  if n >= tonumber(A[o + 2]) and hit(1, A[o + 3]) then return {1} end
  if bfirst > 0 and #list > 0 then
    table.sort(list, function(x, y) return x[1] < y[1] end)
    local bmax = tonumber(A[o + 6])
    local reset = 2 * bmax
    local last = list[#list][1]
    if now - last < reset then
      local streak, nxt = 0, last
      for i = #list, 1, -1 do
        if nxt - list[i][1] >= reset then break end
        streak = streak + list[i][2]
        nxt = list[i][1]
      end
      local wait = bmax
      if streak <= 31 then wait = math.min(bfirst * 2 ^ (streak - 1), bmax) end
      if last + wait > now and hit(2, A[o + 7]) then return {2, last + wait} end
    end
  end
  local nw = tonumber(A[o + 9])
  local q = o + 10 + 7 * nw
  local kb = kw[nw + 1]
  local st = {}
  for w = 1, nw do
    local p = o + 10 + 7 * (w - 1)
    local g
    g, st[w] = counted(kw[w], tonumber(A[p]), tonumber(A[p + 1]), A[p + 1])
    local brk = A[p + 6] == '1' and A[p + 3] == '0'
    if brk then
      local u = redis.call('HGET', kb, 'u')
      if u and tonumber(u) > now then settle(kw, st) return {9 + w, 0} end
    end
    if g + tonumber(A[p + 5]) > tonumber(A[p + 2]) and hit(9 + w, A[p + 3]) then
      settle(kw, st)
      if brk then
        redis.call('DEL', kb)
        redis.call('HSET', kb, 'a', A[o], 'u', A[q + 1], 'n', A[q], 's', g)
        redis.call('PEXPIRE', kb, A[q + 2])
        return {9 + w, 1}
      end
      return {9 + w}
    end
  end
  redis.call('HINCRBY', ku, A[o], 1)
  redis.call('PEXPIRE', ku, A[o + 8])
  for w = 1, nw do
    local p = o + 10 + 7 * (w - 1)
    local cost = tonumber(A[p + 5])
    local s = st[w]
    if tonumber(A[p + 1]) > s.o then s.t = s.t + cost end
    -- This bucket and the sum in one write.
    if s.dirty then
      redis.call('HSET', kw[w], A[p + 1], (s.c or 0) + cost, SUM, s.t, FROM, s.o, GONE, s.d)
    else
      redis.call('HSET', kw[w], A[p + 1], (s.c or 0) + cost, SUM, s.t)
    end
    if not s.c then redis.call('PEXPIRE', kw[w], A[p + 4]) end
  end
  local r = {0}
  for i = 1, #mon do r[#r + 1] = mon[i] end
  return r
end
local function tail(from)
  local t = {}
  for i = from, #KEYS do t[#t + 1] = KEYS[i] end
  return t
end
";

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

/// A call of one of these scripts whose keys and arguments are written
/// straight into the bytes sent (RESP), then sent as they are: what the
/// `redis` crate's `ScriptInvocation` does with a vector allocated for
/// every argument, copied into a command, then encoded. For a login's
/// first script (about 40 arguments) that was about a tenth of
/// smsotp-radiusd's `perf` samples on Redis under load.
pub(super) struct Call<'s> {
    script: &'s Script,
    keys: Bulk,
    args: Bulk,
}

impl<'s> Call<'s> {
    pub(super) fn new(script: &'s Script) -> Self {
        Call {
            script,
            keys: Bulk::with_capacity(256),
            args: Bulk::with_capacity(512),
        }
    }

    pub(super) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// `EVALSHA sha numkeys key… arg…`, encoded.
    fn packed(&self) -> Vec<u8> {
        let mut head = Bulk::with_capacity(80);
        head.push(b"EVALSHA");
        head.push(self.script.get_hash().as_bytes());
        head.push(self.keys.n.to_string().as_bytes());
        let mut out =
            Vec::with_capacity(16 + head.buf.len() + self.keys.buf.len() + self.args.buf.len());
        out.push(b'*');
        decimal(&mut out, head.n + self.keys.n + self.args.n);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&head.buf);
        out.extend_from_slice(&self.keys.buf);
        out.extend_from_slice(&self.args.buf);
        out
    }

    /// Runs the script by its hash, loading it first if the server does
    /// not know it (a new server, a restart, `SCRIPT FLUSH`).
    pub(super) fn invoke<T: FromRedisValue>(&self, con: &mut dyn ConnectionLike) -> RedisResult<T> {
        let packed = self.packed();
        let send = |con: &mut dyn ConnectionLike| -> RedisResult<T> {
            let answer = con.req_packed_command(&packed)?.extract_error()?;
            Ok(redis::from_redis_value(answer)?)
        };
        match send(con) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load(con)?;
                send(con)
            }
            r => r,
        }
    }
}

/// Appends `n` in decimal digits (`write!` through `core::fmt` cost
/// more than the rest of an argument under callgrind).
fn decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// RESP bulk strings one after another, and how many.
struct Bulk {
    buf: Vec<u8>,
    n: usize,
}

impl Bulk {
    fn with_capacity(bytes: usize) -> Self {
        Bulk {
            buf: Vec::with_capacity(bytes),
            n: 0,
        }
    }

    fn push(&mut self, arg: &[u8]) {
        self.buf.push(b'$');
        decimal(&mut self.buf, arg.len());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(arg);
        self.buf.extend_from_slice(b"\r\n");
        self.n += 1;
    }
}

impl RedisWrite for Bulk {
    fn write_arg(&mut self, arg: &[u8]) {
        self.push(arg);
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        /// Gathers one argument, pushed whole when dropped.
        struct Next<'a> {
            to: &'a mut Bulk,
            arg: Vec<u8>,
        }
        impl std::io::Write for Next<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.arg.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                let arg = std::mem::take(&mut self.arg);
                self.to.push(&arg);
            }
        }
        Next {
            to: self,
            arg: Vec::new(),
        }
    }
}

/// KEYS: sends, then each window's. ARGV: the windows' (see `WINDOW`).
pub(super) static RESERVE: LazyLock<Script> =
    LazyLock::new(|| script(&[WINDOW, "return reserve(KEYS[1], tail(2), ARGV, 1)"]));

/// KEYS: challenge. ARGV: the challenge's (see `PUT`). 0, or 3 (conflict).
pub(super) static INSERT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        PUT,
        "local c, old = conflict(KEYS[1], ARGV)
         if c then return 3 end
         put(KEYS[1], ARGV, old)
         return 0",
    ])
});

/// KEYS: challenge, sends, then each window's. ARGV: the challenge's
/// (13), then the windows'. The challenge is written only if the SMS is
/// granted. {3}: a conflict.
pub(super) static START: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        PUT,
        WINDOW,
        "local c, old = conflict(KEYS[1], ARGV)
         if c then return {3} end
         local r = reserve(KEYS[2], tail(3), ARGV, 14)
         if r[1] == 0 then put(KEYS[1], ARGV, old) end
         return r",
    ])
});

/// [`START`] for a caller that found the number before reading the
/// store, with [`super::RedisStore`]'s `login_state` read in the same
/// step. KEYS: failures, phone, language, challenge, sends, then each
/// window's. ARGV: the number found, 1 if the challenge id is a
/// request's (a challenge with it is the caller's to look at), now, the
/// challenge's (13), then the windows'. Always eight answers: 1,
/// language, the phone's number, set at and set by (if registered), two
/// empty, then `START`'s answer; or, writing nothing, 0,
/// locked until, the phone's number, set at and set by, language, the
/// challenge (a flat hash) — when the user is locked out, has another
/// number in the store, or the request's challenge exists.
pub(super) static START_AT_ONCE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        PUT,
        WINDOW,
        "local lu = redis.call('HGET', KEYS[1], 'u')
         local ph = redis.call('HMGET', KEYS[2], 'e', 't', 'b')
         local lang = redis.call('GET', KEYS[3])
         local ch = false
         if ARGV[2] == '1' then
           local h = redis.call('HGETALL', KEYS[4])
           if #h > 0 then ch = h end
         end
         if (lu and tonumber(lu) > tonumber(ARGV[3])) or (ph[1] and ph[1] ~= ARGV[1]) or ch then
           return {0, lu, ph[1], ph[2], ph[3], lang, ch, false}
         end
         local C = {}
         for i = 1, 13 do C[i] = ARGV[3 + i] end
         -- A request's id with no challenge under it (read above) has
         -- nothing to conflict with or to delete.
         local c, old = false, false
         if ARGV[2] ~= '1' then c, old = conflict(KEYS[4], C) end
         if c then return {1, lang, ph[1], ph[2], ph[3], false, false, {3}} end
         local r = reserve(KEYS[5], tail(6), ARGV, 17)
         if r[1] == 0 then put(KEYS[4], C, old) end
         return {1, lang, ph[1], ph[2], ph[3], false, false, r}",
    ])
});

/// KEYS: the breaker's hash, the budget's window. ARGV: now, oldest
/// bucket counted, 1 to reset (forget both). Returns, as strings, what
/// the window holds, then the trip in force (at, until, user, spent) or
/// four empty strings.
pub(super) static BREAKER: LazyLock<Script> = LazyLock::new(|| {
    script(&[r"
local now = tonumber(ARGV[1])
local oldest = tonumber(ARGV[2])
local g = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if tonumber(all[i]) > oldest then g = g + tonumber(all[i + 1]) end
end
local t = redis.call('HMGET', KEYS[1], 'a', 'u', 'n', 's')
local r = {tostring(g), '', '', '', ''}
if t[2] and tonumber(t[2]) > now then r = {tostring(g), t[1], t[2], t[3], t[4]} end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1], KEYS[2]) end
return r
"])
});

/// KEYS: failures. ARGV: now, lockout after, locked until if locked.
/// Returns {count, locked until or -1}.
pub(super) static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    script(&[r"
local f = redis.call('HMGET', KEYS[1], 'n', 'u')
local now = tonumber(ARGV[1])
local n
if f[2] and tonumber(f[2]) <= now then n = 1
elseif f[1] then n = tonumber(f[1]) + 1
else n = 1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'n', n)
local lu = -1
if n >= tonumber(ARGV[2]) then
  lu = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'u', ARGV[3])
end
return {n, lu}
"])
});

/// KEYS: sends. ARGV: window start. Deletes them all; returns how many
/// were after the start.
pub(super) static CLEAR_SENDS: LazyLock<Script> = LazyLock::new(|| {
    script(&[r"
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if tonumber(all[i]) > tonumber(ARGV[1]) then n = n + tonumber(all[i + 1]) end
end
redis.call('DEL', KEYS[1])
return n
"])
});

/// KEYS: challenge. ARGV: MAC, sent, expires, attempts, resends, TTL.
pub(super) static REPLACE_CODE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
unpersist(KEYS[1])
redis.call('HSET', KEYS[1], 'm', ARGV[1], 't', ARGV[2], 'e', ARGV[3], 'a', ARGV[4], 'r', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
",
    ])
});

/// KEYS: challenge. Tries left, or -1 if it is gone.
pub(super) static WRONG_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        r"
local a = redis.call('HGET', KEYS[1], 'a')
if not a then return -1 end
local left = tonumber(a) - 1
if left < 0 then left = 0 end
if left == 0 then redis.call('DEL', KEYS[1])
else
  unpersist(KEYS[1])
  redis.call('HSET', KEYS[1], 'a', left)
end
return left
",
    ])
});

/// KEYS: challenge, failures. ARGV: MAC.
pub(super) static CONSUME: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        EQ,
        r"
if not eq(redis.call('HGET', KEYS[1], 'm'), ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
",
    ])
});

/// KEYS: challenge, failures. ARGV: user, service, MAC, now. The masked
/// phone if it took the code, else nil.
pub(super) static CONSUME_CODE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        EQ,
        r"
local c = redis.call('HMGET', KEYS[1], 'u', 's', 'p', 'e', 'm', 'k')
local now = tonumber(ARGV[4])
if not c[1] or c[1] ~= ARGV[1] or c[2] ~= ARGV[2] or c[3] ~= '0'
   or tonumber(c[4]) <= now or not eq(c[5], ARGV[3]) then return false end
local lu = redis.call('HGET', KEYS[2], 'u')
if lu and tonumber(lu) > now then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return c[6]
",
    ])
});

/// KEYS: challenge. ARGV: MAC.
pub(super) static WITHDRAW: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        EQ,
        r"
if not eq(redis.call('HGET', KEYS[1], 'm'), ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    ])
});

/// KEYS: challenge. ARGV: MAC, step.
pub(super) static SET_STEP: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        EQ,
        r"
if not eq(redis.call('HGET', KEYS[1], 'm'), ARGV[1]) then return 0 end
unpersist(KEYS[1])
redis.call('HSET', KEYS[1], 'p', ARGV[2])
return 1
",
    ])
});

/// KEYS: challenge. ARGV: number, MAC, masked number, sent, expires,
/// attempts, TTL.
pub(super) static ENROLL_NUMBER: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        MEMORY,
        r"
if redis.call('HGET', KEYS[1], 'p') ~= '2' then return 0 end
unpersist(KEYS[1])
redis.call('HSET', KEYS[1], 'p', '3', 'n', ARGV[1], 'm', ARGV[2], 'k', ARGV[3], 't', ARGV[4],
  'e', ARGV[5], 'a', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
",
    ])
});

/// KEYS: challenge, failures, phone. ARGV: MAC, user, at, set by.
pub(super) static COMPLETE_ENROLLMENT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        EQ,
        r"
local c = redis.call('HMGET', KEYS[1], 'm', 'u', 'p', 'n')
if not c[1] or not eq(c[1], ARGV[1]) or c[2] ~= ARGV[2] or c[3] ~= '3' or not c[4] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'e', c[4], 't', ARGV[3], 'b', ARGV[4])
end
return 1
",
    ])
});

/// KEYS: backup codes, failures, challenge. ARGV: hash, whether to delete
/// the challenge. Codes left, or -1 if the code was gone.
pub(super) static CONSUME_BACKUP: LazyLock<Script> = LazyLock::new(|| {
    script(&[r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('DEL', KEYS[3]) end
return redis.call('HLEN', KEYS[1])
"])
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_sends_what_the_crate_s_invocation_sends() {
        let script = Script::new("return {KEYS[1], ARGV[2]}");
        let mut call = Call::new(&script);
        // Keys and arguments given in any order: keys first on the wire.
        call.key("p:c:00ff").arg("alice").key("p:s:alice");
        call.arg(&b"\x00\xffmac"[..])
            .arg(-5i64)
            .arg(7u32)
            .arg(1u8)
            .arg("");
        let mut want = redis::cmd("EVALSHA");
        want.arg(script.get_hash())
            .arg(2)
            .arg("p:c:00ff")
            .arg("p:s:alice")
            .arg("alice")
            .arg(&b"\x00\xffmac"[..])
            .arg("-5")
            .arg("7")
            .arg("1")
            .arg("");
        assert_eq!(call.packed(), want.get_packed_command());
    }

    #[test]
    fn decimal_writes_every_digit() {
        for n in [0, 7, 10, 42, 1000, 123_456_789, usize::MAX] {
            let mut v = b"x".to_vec();
            decimal(&mut v, n);
            assert_eq!(v, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn an_argument_written_in_pieces_is_one_argument() {
        use std::io::Write;
        let mut b = Bulk::with_capacity(0);
        b.write_arg(b"k");
        {
            let mut w = b.writer_for_next_arg();
            w.write_all(b"ab").unwrap();
            w.write_all(b"c").unwrap();
        }
        drop(b.writer_for_next_arg());
        assert_eq!(b.buf, b"$1\r\nk\r\n$3\r\nabc\r\n$0\r\n\r\n");
        assert_eq!(b.n, 3);
    }
}
