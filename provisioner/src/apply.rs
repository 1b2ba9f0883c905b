//! Apply: the only I/O. Each changed file goes to a temp file in its own directory, gets
//! its owner and mode, is fsynced, and only once every temp file is complete are they
//! renamed into place (then the directory is fsynced). A failure before the renames
//! leaves every previous file as it was; a crash at any point leaves each file either
//! old or new, never truncated. Files whose content, mode and owner already match are
//! not touched. Files a previous run generated and this one does not (a retired DKIM
//! key, a removed certificate) are removed, found through a manifest in the root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use crate::reload::{self, ReloadOutcome};
use crate::render::RenderedFile;
use crate::{Config, Error, Output};

const TEMP_PREFIX: &str = ".fugu-tmp.";
const MANIFEST: &str = ".manifest";

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Files (re)written, in render order.
    pub written: Vec<PathBuf>,
    /// Files a previous run generated that are no longer rendered.
    pub removed: Vec<PathBuf>,
    pub unchanged: usize,
    /// Outputs whose files changed (or whose earlier reload failed).
    pub changed: BTreeSet<Output>,
    pub reloads: Vec<ReloadOutcome>,
    /// Dry run: the unified diff of what would change (nothing was written).
    pub dry_run: bool,
    pub diff: String,
}

impl ApplyReport {
    pub fn failed_reloads(&self) -> impl Iterator<Item = &ReloadOutcome> {
        self.reloads.iter().filter(|r| !r.success)
    }

    /// True when every file is in place and every reload succeeded.
    pub fn is_success(&self) -> bool {
        self.failed_reloads().next().is_none()
    }
}

struct Planned<'a> {
    file: &'a RenderedFile,
    uid: Option<u32>,
    gid: Option<u32>,
    old: Option<String>,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Write {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn resolve_user(name: &str, path: &Path) -> Result<u32, Error> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(Error::UnknownOwner {
            path: path.to_path_buf(),
            what: "user",
            name: name.to_string(),
        }),
    }
}

fn resolve_group(name: &str, path: &Path) -> Result<u32, Error> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(Error::UnknownOwner {
            path: path.to_path_buf(),
            what: "group",
            name: name.to_string(),
        }),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{TEMP_PREFIX}{name}"))
}

/// Whether the file on disk already is what was rendered.
fn up_to_date(plan: &Planned<'_>) -> bool {
    let Some(old) = &plan.old else { return false };
    if *old != plan.file.contents {
        return false;
    }
    let Ok(meta) = fs::symlink_metadata(&plan.file.path) else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o7777 == plan.file.mode
        && plan.uid.is_none_or(|u| u == meta.uid())
        && plan.gid.is_none_or(|g| g == meta.gid())
}

fn read_manifest(root: &Path) -> BTreeMap<PathBuf, Output> {
    let Ok(text) = fs::read_to_string(root.join(MANIFEST)) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let (output, rel) = line.split_once(' ')?;
            Some((root.join(rel), output.parse().ok()?))
        })
        .collect()
}

fn manifest_text(root: &Path, files: &[RenderedFile]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.path.strip_prefix(root).ok()?;
            Some(format!("{} {}", f.output, rel.display()))
        })
        .collect();
    lines.sort();
    lines.dedup();
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Files a secret lives in are never shown in a diff.
fn is_secret(file: &RenderedFile) -> bool {
    file.mode & 0o004 == 0 && (file.output == Output::Dkim || file.output == Output::Tls)
}

fn diff_one(out: &mut String, path: &Path, old: &str, new: &str, secret: bool) {
    if secret {
        out.push_str(&format!(
            "--- {p}\n+++ {p}\n(secret key material changed; not shown)\n",
            p = path.display()
        ));
        return;
    }
    let name = path.display().to_string();
    let diff = similar::TextDiff::from_lines(old, new);
    out.push_str(
        &diff
            .unified_diff()
            .context_radius(3)
            .header(&name, &name)
            .to_string(),
    );
}

/// Writes `files`, removes what is no longer generated, and runs the reloads of every
/// output that changed. With `dry_run`, only computes the diff.
pub fn apply(files: &[RenderedFile], config: &Config, dry_run: bool) -> Result<ApplyReport, Error> {
    let root = &config.paths.root;
    let mut plans = Vec::with_capacity(files.len());
    for file in files {
        if !file.path.starts_with(root)
            || file
                .path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::OutsideRoot {
                path: file.path.clone(),
                root: root.clone(),
            });
        }
        let (uid, gid) = if config.set_owners {
            (
                file.owner
                    .as_deref()
                    .map(|o| resolve_user(o, &file.path))
                    .transpose()?,
                file.group
                    .as_deref()
                    .map(|g| resolve_group(g, &file.path))
                    .transpose()?,
            )
        } else {
            (None, None)
        };
        let old = fs::read_to_string(&file.path).ok();
        plans.push(Planned {
            file,
            uid,
            gid,
            old,
        });
    }

    let mut report = ApplyReport {
        dry_run,
        ..ApplyReport::default()
    };
    let rendered: BTreeSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let stale: Vec<(PathBuf, Output)> = read_manifest(root)
        .into_iter()
        .filter(|(path, output)| {
            config.renders(*output) && !rendered.contains(path.as_path()) && path.starts_with(root)
        })
        .collect();

    let changed: Vec<&Planned<'_>> = plans.iter().filter(|p| !up_to_date(p)).collect();
    report.unchanged = plans.len() - changed.len();

    if dry_run {
        for plan in &changed {
            diff_one(
                &mut report.diff,
                &plan.file.path,
                plan.old.as_deref().unwrap_or(""),
                &plan.file.contents,
                is_secret(plan.file),
            );
            report.written.push(plan.file.path.clone());
            report.changed.insert(plan.file.output);
        }
        for (path, output) in &stale {
            if let Ok(old) = fs::read_to_string(path) {
                diff_one(
                    &mut report.diff,
                    path,
                    &old,
                    "",
                    *output != Output::Dovecot && *output != Output::Smtpd,
                );
                report.removed.push(path.clone());
                report.changed.insert(*output);
            }
        }
        return Ok(report);
    }

    // Temp files a killed run left behind are garbage.
    let dirs_rendered: BTreeSet<&Path> = files.iter().filter_map(|f| f.path.parent()).collect();
    for dir in dirs_rendered {
        remove_stale_temps(dir);
    }

    // Phase 1: every new file complete and durable beside its target. Any failure here
    // removes the temp files and leaves the previous set untouched.
    let mut temps: Vec<(PathBuf, &Planned<'_>)> = Vec::new();
    let staged = (|| {
        for plan in &changed {
            let temp = write_temp(plan)?;
            temps.push((temp, plan));
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = staged {
        for (temp, _) in &temps {
            let _ = fs::remove_file(temp);
        }
        return Err(e);
    }

    // Phase 2: renames, each atomic; then each directory is fsynced once.
    let mut dirs = BTreeSet::new();
    for (temp, plan) in &temps {
        fs::rename(temp, &plan.file.path).map_err(io(&plan.file.path, "rename into place"))?;
        if let Some(dir) = plan.file.path.parent() {
            dirs.insert(dir.to_path_buf());
        }
        report.written.push(plan.file.path.clone());
        report.changed.insert(plan.file.output);
    }
    for (path, output) in &stale {
        match fs::remove_file(path) {
            Ok(()) => {
                report.removed.push(path.clone());
                report.changed.insert(*output);
                if let Some(dir) = path.parent() {
                    dirs.insert(dir.to_path_buf());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(path, "remove stale file")(e)),
        }
    }
    if !report.written.is_empty() || !report.removed.is_empty() || !root.join(MANIFEST).exists() {
        write_atomic(&root.join(MANIFEST), &manifest_text(root, files), 0o644)?;
        dirs.insert(root.clone());
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    for path in &report.written {
        tracing::info!(path = %path.display(), "written");
    }
    for path in &report.removed {
        tracing::info!(path = %path.display(), "removed");
    }

    report.changed.extend(reload::pending(config));
    report.reloads = reload::run(config, &report.changed);
    Ok(report)
}

fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Creates `dir` and its missing parents as 0755 whatever the umask, as files get their
/// mode whatever it is: under a hardening umask (027, 077) the directories would shut
/// out the daemons that read the files (Dovecot's unprivileged auth processes, the mta).
/// Directories that already exist keep the mode the operator gave them.
fn create_dirs(dir: &Path) -> Result<(), Error> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .map_err(io(d, "set the mode of directory"))?,
            // Made meanwhile by another writer: theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(d, "create directory")(e)),
        }
    }
    Ok(())
}

fn write_temp(plan: &Planned<'_>) -> Result<PathBuf, Error> {
    let path = &plan.file.path;
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    let temp = temp_path(path);
    // A temp file left by a crashed run is garbage: start over.
    let _ = fs::remove_file(&temp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io(&temp, "create temp file"))?;
    let result = (|| {
        f.write_all(plan.file.contents.as_bytes())
            .map_err(io(&temp, "write"))?;
        if plan.uid.is_some() || plan.gid.is_some() {
            std::os::unix::fs::fchown(&f, plan.uid, plan.gid).map_err(io(&temp, "chown"))?;
        }
        f.set_permissions(fs::Permissions::from_mode(plan.file.mode))
            .map_err(io(&temp, "chmod"))?;
        f.sync_all().map_err(io(&temp, "fsync"))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Writes one file atomically (for the provisioner's own bookkeeping files).
pub(crate) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let file = RenderedFile::new(
        Output::Dovecot,
        path.to_path_buf(),
        contents.to_string(),
        mode,
    );
    let plan = Planned {
        file: &file,
        uid: None,
        gid: None,
        old: None,
    };
    let temp = write_temp(&plan)?;
    fs::rename(&temp, path).map_err(io(path, "rename into place"))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}
