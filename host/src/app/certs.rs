//! The public listener's certificate, re-read without a restart: on SIGHUP
//! and when its files change (a renewal by certbot, a secret mounted by
//! Kubernetes, a `cp`). A reload that fails keeps the certificate in use;
//! what happened is told to the caller as [`CertEvent`]s.
//!
//! The files' directories are watched, not the files, so a file replaced
//! by a rename (or a symlink swapped) is seen; a change that leaves the
//! files as they were reloads nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use super::watch::WatchError;
use crate::edge::{Reloaded, Tls};

/// Quiet time after the last change before reloading: a renewal writes the
/// certificate and the key one after the other.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What set off a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Hangup,
    /// A change in the files' directories.
    FileChange,
}

/// What a reload did, for the caller to tell the operator.
#[derive(Debug, Clone)]
pub enum CertEvent {
    /// New connections get the certificate the files hold now.
    Reloaded(Trigger),
    /// The files hold the certificate in use already (told for SIGHUP
    /// only).
    Unchanged(Trigger),
    /// The files could not be used; the certificate in use stays.
    Failed(Trigger, String),
}

/// Reloads the certificate while it lives; dropping it stops watching
/// (SIGHUP stays handled until the runtime ends).
pub struct CertReloader {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader").finish_non_exhaustive()
    }
}

fn reload(tls: &Tls, trigger: Trigger) -> CertEvent {
    match tls.reload() {
        Ok(Reloaded::Changed) => CertEvent::Reloaded(trigger),
        Ok(Reloaded::Unchanged) => CertEvent::Unchanged(trigger),
        Err(e) => CertEvent::Failed(trigger, e.to_string()),
    }
}

/// Reload `tls`'s certificate on SIGHUP and when its files change, telling
/// `report` what happened. Must be called inside a tokio runtime.
pub fn reload_certificates(
    tls: Arc<Tls>,
    report: impl Fn(CertEvent) + Send + Sync + 'static,
) -> Result<CertReloader, WatchError> {
    let report = Arc::new(report);
    let directories: Vec<PathBuf> = {
        let files = tls.files();
        let mut dirs: Vec<PathBuf> = [&files.cert, &files.key]
            .into_iter()
            .map(|f| f.parent().unwrap_or(Path::new(".")).to_path_buf())
            .map(|d| {
                if d.as_os_str().is_empty() {
                    ".".into()
                } else {
                    d
                }
            })
            .collect();
        dirs.dedup();
        dirs
    };
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, tx).map_err(WatchError::Start)?;
    for dir in &directories {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    {
        let (tls, report) = (tls.clone(), report.clone());
        std::thread::Builder::new()
            .name("comet-certs".into())
            .spawn(move || {
                // Other files in the directories change too (logs, a
                // renewal's other certificates): what comes of those is not
                // told, nor the same failure twice.
                let mut failed = None;
                for result in rx {
                    let Ok(_) = result else { continue };
                    match reload(&tls, Trigger::FileChange) {
                        CertEvent::Unchanged(_) => {}
                        CertEvent::Failed(trigger, why) => {
                            if failed.as_ref() != Some(&why) {
                                failed = Some(why.clone());
                                report(CertEvent::Failed(trigger, why));
                            }
                        }
                        event => {
                            failed = None;
                            report(event);
                        }
                    }
                }
            })
            .map_err(WatchError::Thread)?;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    report(reload(&tls, Trigger::Hangup));
                }
            });
        }
    }
    Ok(CertReloader {
        _debouncer: debouncer,
    })
}
