//! Reloads: the configured commands of each output that changed, in order, stopping at
//! the first failure of an output. Exit status and stderr are logged; a failure leaves a
//! marker in the root so the next run (or the next tick of `watch`) retries it even
//! though no file changes again.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};

use crate::{Config, Output};

/// How one reload command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub output: Output,
    pub command: Vec<String>,
    pub success: bool,
    /// `None` when the command could not be started or was killed by a signal.
    pub status: Option<i32>,
    pub stderr: String,
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(code) => format!("exit status {code}"),
            None => "no exit status".to_string(),
        };
        write!(
            f,
            "{} reload `{}`: {}",
            self.output,
            self.command.join(" "),
            if self.success { "ok" } else { &status }
        )?;
        if !self.stderr.trim().is_empty() {
            write!(f, ": {}", self.stderr.trim())?;
        }
        Ok(())
    }
}

/// Outputs whose last reload failed (markers in `paths.pending_dir`).
pub fn pending(config: &Config) -> BTreeSet<Output> {
    let Ok(dir) = fs::read_dir(&config.paths.pending_dir) else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|o| config.renders(*o))
        .collect()
}

fn mark(config: &Config, output: Output, failed: bool) {
    let marker = config.paths.pending_dir.join(output.name());
    if failed {
        let written =
            fs::create_dir_all(&config.paths.pending_dir).and_then(|()| fs::write(&marker, b""));
        if let Err(e) = written {
            tracing::error!(%output, "cannot record the failed reload for a retry: {e}");
        }
    } else if marker.exists() {
        let _ = fs::remove_file(&marker);
    }
}

pub fn run(config: &Config, changed: &BTreeSet<Output>) -> Vec<ReloadOutcome> {
    let mut outcomes = Vec::new();
    for &output in changed {
        let commands = config.reload.get(&output).map(Vec::as_slice).unwrap_or(&[]);
        let mut failed = false;
        for argv in commands {
            let outcome = run_one(output, argv);
            if outcome.success {
                tracing::info!("{outcome}");
            } else {
                tracing::error!("{outcome}");
                failed = true;
            }
            outcomes.push(outcome);
            if failed {
                break;
            }
        }
        mark(config, output, failed);
    }
    outcomes
}

fn run_one(output: Output, argv: &[String]) -> ReloadOutcome {
    let mut outcome = ReloadOutcome {
        output,
        command: argv.to_vec(),
        success: false,
        status: None,
        stderr: String::new(),
    };
    let Some((program, args)) = argv.split_first() else {
        outcome.stderr = "empty command".to_string();
        return outcome;
    };
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => {
            outcome.success = out.status.success();
            outcome.status = out.status.code();
            outcome.stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        Err(e) => outcome.stderr = format!("cannot run {program}: {e}"),
    }
    outcome
}
