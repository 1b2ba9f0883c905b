//! TLS: one directory per certificate's primary name with `fullchain.pem` (0444) and
//! `privkey.pem` (0440, group `tls_group`: the mta, Dovecot and the console read it).

use std::collections::BTreeMap;

use store::Certificate;

use super::RenderedFile;
use crate::{Config, Output, Snapshot};

/// Prefers certificates valid at the snapshot's time, then the latest expiry, then the
/// newest row: the renewed certificate wins as soon as it is stored.
fn better<'a>(snapshot: &Snapshot, a: &'a Certificate, b: &'a Certificate) -> &'a Certificate {
    let valid =
        |c: &Certificate| c.not_before <= snapshot.taken_at && snapshot.taken_at < c.not_after;
    let key = |c: &Certificate| (valid(c), c.not_after, c.id);
    if key(b) > key(a) { b } else { a }
}

/// The certificate to serve for `name`, if any covers it.
pub fn current_for<'a>(snapshot: &'a Snapshot, name: &str) -> Option<&'a Certificate> {
    snapshot
        .certificates
        .iter()
        .filter(|c| c.covers(name))
        .reduce(|a, b| better(snapshot, a, b))
}

/// The current certificate for each primary name.
pub fn current_by_primary(snapshot: &Snapshot) -> BTreeMap<&str, &Certificate> {
    let mut by_name: BTreeMap<&str, &Certificate> = BTreeMap::new();
    for cert in &snapshot.certificates {
        let name = cert.primary_name();
        // A name becomes a directory: refuse anything that could walk out of tls/.
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            tracing::warn!(names = %cert.names, "certificate skipped: unusable primary name");
            continue;
        }
        let chosen = match by_name.get(name) {
            Some(prev) => better(snapshot, prev, cert),
            None => cert,
        };
        by_name.insert(name, chosen);
    }
    by_name
}

pub fn render(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let paths = &config.paths;
    let mut files = Vec::new();
    for (name, cert) in current_by_primary(snapshot) {
        files.push(RenderedFile::new(
            Output::Tls,
            paths.tls_chain(name),
            ensure_newline(&cert.chain_pem),
            0o444,
        ));
        files.push(
            RenderedFile::new(
                Output::Tls,
                paths.tls_key(name),
                ensure_newline(&cert.key_pem),
                0o440,
            )
            .owned(None, config.mta.tls_group.as_deref()),
        );
    }
    files
}

pub(crate) fn ensure_newline(pem: &str) -> String {
    let mut s = pem.trim_end().to_string();
    s.push('\n');
    s
}
