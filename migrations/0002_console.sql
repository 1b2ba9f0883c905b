-- The admin console's own state in fugu.db: API tokens, TOTP recovery codes and the
-- failed-login record behind the console's rate limiting. Sessions live in sessions.db.

-- Only the SHA-256 of a token is kept: the token itself is shown once, at creation.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    admin_id INTEGER NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
    scope TEXT NOT NULL CHECK (scope IN ('read', 'read-write')),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    last_used_at INTEGER
);

-- One-time TOTP recovery codes, hashed like passwords.
CREATE TABLE admin_recovery_codes (
    id INTEGER PRIMARY KEY,
    admin_id INTEGER NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL
);

-- Failed console sign-ins, keyed 'ip:<addr>' or 'account:<name>'; pruned as they age out.
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);

CREATE INDEX audit_log_actor ON audit_log (actor, at);
