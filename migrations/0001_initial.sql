-- fugu's appliance schema. Lookup keys are lower-case (OpenSMTPD lower-cases keys before
-- every lookup), enforced here so that no writer can store a key that never matches.
-- Timestamps are Unix seconds.

-- Bumped by triggers on every provisioned table, whoever writes; the provisioner watches it.
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO change_counter (id, value) VALUES (1, 0);

CREATE TABLE settings (
    key TEXT PRIMARY KEY CHECK (key = lower(key) AND length(key) > 0),
    value TEXT NOT NULL
);
-- The userbase name every virtual mailbox maps to, and its uid/gid/home (Dovecot's vmail).
INSERT INTO settings (key, value) VALUES
    ('vmail_user', 'vmail'),
    ('vmail_uid', '5000'),
    ('vmail_gid', '5000'),
    ('vmail_home', '/var/vmail');

CREATE TABLE domains (
    name TEXT PRIMARY KEY
        CHECK (name = lower(name) AND length(name) BETWEEN 3 AND 253 AND name GLOB '*?.?*'
               AND name NOT GLOB '*[^a-z0-9.-]*'),
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    local_part TEXT NOT NULL
        CHECK (local_part = lower(local_part) AND length(local_part) BETWEEN 1 AND 64
               AND local_part NOT GLOB '*[^a-z0-9!#$%&''*+/=?^_`{|}~.-]*'),
    address TEXT NOT NULL UNIQUE CHECK (address = local_part || '@' || domain),
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    quota_bytes INTEGER NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0),  -- 0: no quota
    uid INTEGER NOT NULL CHECK (uid > 0),
    gid INTEGER NOT NULL CHECK (gid > 0),
    home TEXT NOT NULL CHECK (home GLOB '/*'),      -- Maildir lives in <home>/Maildir
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE INDEX users_domain ON users (domain);

-- One row per (source, destination) pair. source is a full address or '@domain' (catch-all).
CREATE TABLE aliases (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    source TEXT NOT NULL
        CHECK (source = lower(source) AND (source = '@' || domain OR source GLOB '?*@' || domain)),
    destination TEXT NOT NULL CHECK (destination = lower(destination) AND destination GLOB '?*@?*'),
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    -- A mailbox mapping to itself is dropped by OpenSMTPD's expansion and ends in 524 5.2.4.
    CHECK (source <> destination),
    UNIQUE (source, destination)
);
CREATE INDEX aliases_domain ON aliases (domain);
CREATE INDEX aliases_destination ON aliases (destination);

-- OpenSMTPD's `virtual` lookup (query_alias): mailbox address -> the userbase name that owns
-- the mail, alias -> destination. Only full addresses and '@domain' keys: OpenSMTPD also
-- tries 'user+tag', 'user' and '@', which must find nothing here.
CREATE VIEW virtual_lookup (key, destination) AS
    SELECT u.address, (SELECT value FROM settings WHERE key = 'vmail_user')
      FROM users u JOIN domains d ON d.name = u.domain
     WHERE u.active = 1 AND d.active = 1
    UNION ALL
    SELECT a.source, a.destination
      FROM aliases a JOIN domains d ON d.name = a.domain
     WHERE a.active = 1 AND d.active = 1;

-- query_credentials: login -> (login, hash).
CREATE VIEW credentials_lookup (login, password_hash) AS
    SELECT u.address, u.password_hash
      FROM users u JOIN domains d ON d.name = u.domain
     WHERE u.active = 1 AND d.active = 1;

-- query_mailaddrmap: which MAIL FROM addresses a login may use: its own address and every
-- alias source that delivers to it.
CREATE VIEW sender_lookup (login, address) AS
    SELECT u.address, u.address FROM users u WHERE u.active = 1
    UNION
    SELECT a.destination, a.source FROM aliases a
      JOIN users u ON u.address = a.destination AND u.active = 1
     WHERE a.active = 1;

-- query_userinfo: the userbase (one virtual user owning every mailbox).
CREATE VIEW userbase_lookup (name, uid, gid, home) AS
    SELECT (SELECT value FROM settings WHERE key = 'vmail_user'),
           CAST((SELECT value FROM settings WHERE key = 'vmail_uid') AS INTEGER),
           CAST((SELECT value FROM settings WHERE key = 'vmail_gid') AS INTEGER),
           (SELECT value FROM settings WHERE key = 'vmail_home');

CREATE TABLE dkim_keys (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    selector TEXT NOT NULL CHECK (selector = lower(selector) AND selector NOT GLOB '*[^a-z0-9._-]*'
                                  AND length(selector) BETWEEN 1 AND 63),
    algorithm TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key TEXT NOT NULL,          -- PKCS#8 PEM
    public_key TEXT NOT NULL,           -- base64 of the p= value
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'active', 'retired')),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    activated_at INTEGER,
    retired_at INTEGER,
    UNIQUE (domain, selector)
);

CREATE TABLE acme_accounts (
    id INTEGER PRIMARY KEY,
    directory_url TEXT NOT NULL UNIQUE,
    contact TEXT NOT NULL DEFAULT '',
    credentials TEXT NOT NULL,          -- instant-acme's serialised account credentials
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE certificates (
    id INTEGER PRIMARY KEY,
    names TEXT NOT NULL CHECK (names = lower(names) AND length(names) > 0),  -- space-separated, first is the primary name
    chain_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('acme', 'manual', 'self-signed')),
    acme_account_id INTEGER REFERENCES acme_accounts (id) ON DELETE SET NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE access_rules (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('ip', 'cidr', 'sender', 'recipient', 'domain')),
    value TEXT NOT NULL CHECK (value = lower(value) AND length(value) > 0),
    action TEXT NOT NULL CHECK (action IN ('block', 'allow')),
    source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'auto', 'feed')),
    reason TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    expires_at INTEGER,
    UNIQUE (kind, value, action)
);

CREATE TABLE admins (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE CHECK (username = lower(username) AND length(username) BETWEEN 1 AND 254),
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('superadmin', 'domain_admin')),
    totp_secret TEXT,
    totp_enabled INTEGER NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    last_login_at INTEGER
);

CREATE TABLE admin_domains (
    admin_id INTEGER NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    PRIMARY KEY (admin_id, domain)
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL DEFAULT (unixepoch()),
    actor TEXT NOT NULL,                -- admin username, 'cli', 'mta', 'provisioner'
    action TEXT NOT NULL,               -- e.g. 'domain.add', 'user.passwd'
    object TEXT NOT NULL,
    before TEXT,                        -- JSON
    after TEXT,                         -- JSON
    remote_addr TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Every provisioned table bumps the change counter on every write.
CREATE TRIGGER domains_ai AFTER INSERT ON domains BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER domains_au AFTER UPDATE ON domains BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER domains_ad AFTER DELETE ON domains BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER users_ai AFTER INSERT ON users BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER users_au AFTER UPDATE ON users BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER users_ad AFTER DELETE ON users BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER aliases_ai AFTER INSERT ON aliases BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER aliases_au AFTER UPDATE ON aliases BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER aliases_ad AFTER DELETE ON aliases BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER dkim_keys_ai AFTER INSERT ON dkim_keys BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER dkim_keys_au AFTER UPDATE ON dkim_keys BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER dkim_keys_ad AFTER DELETE ON dkim_keys BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER certificates_ai AFTER INSERT ON certificates BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER certificates_au AFTER UPDATE ON certificates BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER certificates_ad AFTER DELETE ON certificates BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER access_rules_ai AFTER INSERT ON access_rules BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER access_rules_au AFTER UPDATE ON access_rules BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER access_rules_ad AFTER DELETE ON access_rules BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER settings_ai AFTER INSERT ON settings BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER settings_au AFTER UPDATE ON settings BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER settings_ad AFTER DELETE ON settings BEGIN UPDATE change_counter SET value = value + 1; END;
