-- Per-domain deliverability policy the console edits: MTA-STS (RFC 8461), DMARC (RFC 7489)
-- and which optional names (mta-sts.<domain>, autoconfig.<domain>) the domain publishes.
-- A domain without a row uses the defaults below.
CREATE TABLE domain_policies (
    domain TEXT PRIMARY KEY REFERENCES domains (name) ON DELETE CASCADE,
    mta_sts_mode TEXT NOT NULL DEFAULT 'testing' CHECK (mta_sts_mode IN ('none', 'testing', 'enforce')),
    -- RFC 8461 §3.2: at most 31557600 seconds; a day at least, so a policy is worth caching.
    mta_sts_max_age INTEGER NOT NULL DEFAULT 604800 CHECK (mta_sts_max_age BETWEEN 86400 AND 31557600),
    dmarc_policy TEXT NOT NULL DEFAULT 'none' CHECK (dmarc_policy IN ('none', 'quarantine', 'reject')),
    -- mailto: address for aggregate reports (DMARC rua=, TLS-RPT rua=); empty for none.
    report_address TEXT NOT NULL DEFAULT '' CHECK (report_address = lower(report_address)),
    mta_sts_enabled INTEGER NOT NULL DEFAULT 1 CHECK (mta_sts_enabled IN (0, 1)),
    autoconfig_enabled INTEGER NOT NULL DEFAULT 1 CHECK (autoconfig_enabled IN (0, 1)),
    updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TRIGGER domain_policies_ai AFTER INSERT ON domain_policies BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER domain_policies_au AFTER UPDATE ON domain_policies BEGIN UPDATE change_counter SET value = value + 1; END;
CREATE TRIGGER domain_policies_ad AFTER DELETE ON domain_policies BEGIN UPDATE change_counter SET value = value + 1; END;
