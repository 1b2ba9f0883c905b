//! DKIM: one private key file per active selector (`dkim/<domain>/<selector>.key`,
//! PKCS#8 PEM, 0400, owned by the mta's user), the `dkim/keys` table the mta's
//! `dkim-sign <dkimkeys>` reads, and the same keys for an external signer: a
//! `dkimproxy_out.conf` with its sender map, and OpenDKIM's `KeyTable`/`SigningTable`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use store::DkimKey;

use super::{GENERATED, RenderedFile, active_domains, tls::ensure_newline};
use crate::{Config, Output, Snapshot};

/// Where dkimproxy listens for mail to sign and where it hands signed mail back.
pub const DKIMPROXY_LISTEN: &str = "127.0.0.1:10026";
pub const DKIMPROXY_RELAY: &str = "127.0.0.1:10027";

/// Active keys of active domains, by domain, in selector order.
pub fn active_keys(snapshot: &Snapshot) -> BTreeMap<&str, Vec<&DkimKey>> {
    let domains = active_domains(snapshot);
    let mut keys: BTreeMap<&str, Vec<&DkimKey>> = BTreeMap::new();
    for key in &snapshot.dkim_keys {
        if key.state == "active" && domains.contains(key.domain.as_str()) {
            keys.entry(key.domain.as_str()).or_default().push(key);
        }
    }
    keys
}

pub fn render(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let paths = &config.paths;
    let keys = active_keys(snapshot);
    let mut files = Vec::new();
    let mut table = String::from(GENERATED);
    table.push_str("# domain  selector:algorithm:keyfile[,...] (active selectors)\n");
    let mut sender_map = String::from(GENERATED);
    let mut key_table = String::from(GENERATED);
    let mut signing_table = String::from(GENERATED);
    for (domain, selectors) in &keys {
        let mut entries = Vec::new();
        for key in selectors {
            let path = paths.dkim_key(domain, &key.selector);
            files.push(
                RenderedFile::new(
                    Output::Dkim,
                    path.clone(),
                    ensure_newline(&key.private_key),
                    0o400,
                )
                .owned(config.mta.user.as_deref(), None),
            );
            entries.push(format!(
                "{}:{}:{}",
                key.selector,
                key.algorithm,
                path.display()
            ));
            let record = format!("{}._domainkey.{domain}", key.selector);
            let _ = writeln!(
                key_table,
                "{record} {domain}:{}:{}",
                key.selector,
                path.display()
            );
            let _ = writeln!(signing_table, "*@{domain} {record}");
            // dkimproxy signs with RSA only.
            if key.algorithm == "rsa-sha256" {
                let _ = writeln!(
                    sender_map,
                    "{domain} dkim(key={},a=rsa-sha256,c=relaxed,s={})",
                    path.display(),
                    key.selector
                );
            }
        }
        let _ = writeln!(table, "{domain} {}", entries.join(","));
    }
    let dkimproxy = format!(
        "{GENERATED}# dkimproxy.out for operators who keep an external signer: the mta relays\n\
         # outbound mail to {DKIMPROXY_LISTEN}, dkimproxy signs it and hands it back on {DKIMPROXY_RELAY}.\n\
         listen    {DKIMPROXY_LISTEN}\n\
         relay     {DKIMPROXY_RELAY}\n\
         sender_map {}\n",
        paths.dkimproxy_sender_map.display()
    );
    files.push(RenderedFile::new(
        Output::Dkim,
        paths.dkim_table.clone(),
        table,
        0o644,
    ));
    files.push(RenderedFile::new(
        Output::Dkim,
        paths.dkimproxy_conf.clone(),
        dkimproxy,
        0o644,
    ));
    files.push(RenderedFile::new(
        Output::Dkim,
        paths.dkimproxy_sender_map.clone(),
        sender_map,
        0o644,
    ));
    files.push(RenderedFile::new(
        Output::Dkim,
        paths.opendkim_key_table.clone(),
        key_table,
        0o644,
    ));
    files.push(RenderedFile::new(
        Output::Dkim,
        paths.opendkim_signing_table.clone(),
        signing_table,
        0o644,
    ));
    files
}
