-- A store in layout 6 (today's, SCHEMA_VERSION in ../mod.rs): layout 5
-- and the SMS counters (`sms_count`), holding one of each durable kind, a
-- per-number window, a breaker tripped until 2100 and counters of day
-- 20425 (2025-12-03). Opened by the test `layout_6_keeps_what_is_durable`:
-- the next layout change must migrate the durable rows, not drop them.
-- Leave this file as it is when the layout changes; add the new layout's
-- fixture beside it.
PRAGMA user_version = 6;
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
    resends_used  INTEGER NOT NULL,
    step          INTEGER NOT NULL DEFAULT 0,
    pending_phone TEXT
) WITHOUT ROWID;
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
CREATE TABLE sms_limit (
    name   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (name, size, bucket)
) WITHOUT ROWID;
CREATE TABLE breaker (
    name  TEXT PRIMARY KEY,
    at    INTEGER NOT NULL,
    until INTEGER NOT NULL,
    user  TEXT NOT NULL,
    spent INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE sms_count (
    day      INTEGER NOT NULL,
    provider TEXT NOT NULL,
    country  TEXT NOT NULL,
    what     TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (day, provider, country, what)
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
CREATE TABLE phone (
    user   TEXT PRIMARY KEY,
    e164   TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    set_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE backup_code (
    user       TEXT NOT NULL,
    id         INTEGER NOT NULL,
    tag        BLOB NOT NULL,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE TABLE opt_out (
    user   TEXT PRIMARY KEY,
    set_at INTEGER NOT NULL,
    set_by TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO phone VALUES ('alice', '+12025550143', 1000, 'admin:root');
INSERT INTO phone VALUES ('carol', '+447700900123', 2000, 'enroll');
INSERT INTO backup_code VALUES ('alice', 0, x'0102030405060708', '$argon2id$fixture-hash-0', 1000);
INSERT INTO backup_code VALUES ('alice', 1, x'1112131415161718', '$argon2id$fixture-hash-1', 1000);
INSERT INTO opt_out VALUES ('dave', 3000, 'admin:root');
INSERT INTO failure VALUES ('mallory', 5, 4102444800000);
INSERT INTO failure VALUES ('bob', 2, NULL);
INSERT INTO sms_limit VALUES ('number:+12025550143', 1440000, 600, 2);
INSERT INTO breaker VALUES ('budget', 4000, 4102444800000, 'erin', 2000);
INSERT INTO sms_count VALUES (20425, 'sms1', 'GB', 'sent', 7);
INSERT INTO sms_count VALUES (20425, '-', 'NG', 'refused:sms_per_country', 3);
INSERT INTO sms_count VALUES (20425, 'smpp', 'GB', 'receipt:UNDELIV', 1);
INSERT INTO sms_count VALUES (20425, 'sms1', 'GB', 'a-counter-of-a-newer-build', 1);
