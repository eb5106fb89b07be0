-- A store as layout 2 made it (smsotp before numbers, backup codes and
-- opt-outs were kept in the store; SCHEMA_VERSION 2 in core/src/store.rs
-- at commit 29cc50c^). Its one durable row is a lockout, which any later
-- layout must keep. Opened by the test `layout_2_keeps_its_lockout`.
PRAGMA user_version = 2;
CREATE TABLE challenge (
    id            BLOB PRIMARY KEY,
    user          TEXT NOT NULL,
    service       TEXT NOT NULL,
    code_mac      BLOB NOT NULL,
    phone_masked  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    attempts_left INTEGER NOT NULL,
    resends_used  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX challenge_user ON challenge(user, service, created_at);
CREATE TABLE sms_sent (
    user TEXT NOT NULL,
    at   INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (user, at)
) WITHOUT ROWID;
CREATE TABLE sms_global (
    size   INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (size, bucket)
) WITHOUT ROWID;
CREATE TABLE number_cache (
    key    TEXT PRIMARY KEY,
    e164   TEXT NOT NULL,
    region TEXT
) WITHOUT ROWID;
CREATE TABLE failure (
    user         TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    locked_until INTEGER
) WITHOUT ROWID;
INSERT INTO challenge VALUES (x'07070707070707070707070707070707', 'alice', 'sshd',
    zeroblob(32), '******0143', 1000, 1000, 4102444800000, 3, 0);
INSERT INTO sms_sent VALUES ('alice', 1000, 1);
INSERT INTO failure VALUES ('mallory', 5, 4102444800000);
INSERT INTO failure VALUES ('bob', 2, NULL);
