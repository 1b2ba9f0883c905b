-- ACME: the certificates the operator asked for, which the console's renewal task keeps
-- current. The issued certificates themselves go to `certificates` (source 'acme'), which the
-- provisioner renders; a request only remembers how to get the next one.
CREATE TABLE acme_requests (
    id INTEGER PRIMARY KEY,
    -- space-separated, first is the primary name (the mail host name)
    names TEXT NOT NULL CHECK (names = lower(names) AND length(names) > 0),
    acme_account_id INTEGER NOT NULL REFERENCES acme_accounts (id) ON DELETE CASCADE,
    -- The certificate key (PKCS#8 PEM), reused across renewals when reuse_key is set, so that
    -- TLSA 3 1 1 records stay valid. NULL until the first successful order.
    key_pem TEXT,
    reuse_key INTEGER NOT NULL DEFAULT 1 CHECK (reuse_key IN (0, 1)),
    -- The newest certificate issued for this request.
    certificate_id INTEGER REFERENCES certificates (id) ON DELETE SET NULL,
    last_error TEXT,
    -- consecutive failed attempts; the retry delay doubles with each
    failures INTEGER NOT NULL DEFAULT 0,
    -- no attempt before this time (Unix seconds) after a failure
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
    UNIQUE (names, acme_account_id)
);
