//! Feeds arbitrary text to the smtpd.conf parser with includes refused (nothing is read
//! from disk); checks it never panics, and that a configuration it accepts can be dumped.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mta::config::{SourceLoader, parse};

/// Every `include` fails, and every `listen on NAME` names an interface that exists.
struct NoFiles;

impl SourceLoader for NoFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: includes are off while fuzzing", path.display()),
        ))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, Path::new("fuzz.conf"), &NoFiles) {
        Ok(cfg) => {
            let _ = cfg.dump();
        }
        Err(diags) => {
            assert!(!diags.0.is_empty());
            let _ = diags.to_string();
        }
    }
});
