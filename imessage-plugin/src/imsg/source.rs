//! How an account reaches imsg (channel-behaviour.md §8.4, §11): the CLI, the database, the
//! remote Mac (configured or read from an SSH wrapper), and the signature that ties the
//! cursor and the source lock to that database.

use std::path::{Path, PathBuf};

use crate::config::{rules, AccountConfig};
use crate::imsg::remote;
use crate::imsg::rpc::SpawnConfig;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `~/x` → `$HOME/x`.
pub fn expand_tilde(path: &str) -> String {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => h.join(rest).display().to_string(),
        _ if path == "~" => home()
            .map(|h| h.display().to_string())
            .unwrap_or_else(|| path.into()),
        _ => path.to_string(),
    }
}

/// How an account reaches imsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub cli: String,
    pub db: Option<String>,
    pub remote_host: Option<String>,
    /// `config`, `detected` or `none`.
    pub remote_source: &'static str,
    /// The wrapper was read but its host could not be told (§8.4): local mode, with a warning.
    pub detection_unclear: bool,
}

impl Source {
    pub fn resolve(account: &AccountConfig) -> Source {
        let cli = expand_tilde(&account.cli_path);
        let mut detection_unclear = false;
        let (remote_host, remote_source) = match &account.remote_host {
            Some(h) => (Some(h.clone()), "config"),
            // Only a path-like cliPath can be a wrapper; a bare name is never read.
            None if rules::is_path_like(&account.cli_path) => match remote::detect(&cli) {
                remote::Detection::Host(h) => (Some(h), "detected"),
                remote::Detection::Unclear => {
                    detection_unclear = true;
                    (None, "none")
                }
                remote::Detection::None => (None, "none"),
            },
            None => (None, "none"),
        };
        let remote = remote_host.is_some();
        Source {
            cli,
            // On a remote Mac the path is the Mac's: no local expansion.
            db: account.db_path.as_deref().map(|d| {
                if remote {
                    d.to_string()
                } else {
                    expand_tilde(d)
                }
            }),
            remote_host,
            remote_source,
            detection_unclear,
        }
    }

    /// The signature that ties a cursor to a database (§6.2, §11).
    pub fn signature(&self) -> String {
        format!(
            "{}|{}|{}",
            self.cli,
            self.db.as_deref().unwrap_or(""),
            self.remote_host.as_deref().unwrap_or("")
        )
    }

    /// `<stateDir>/imessage/locks/<first 16 hex of sha256(signature)>.lock` (§11).
    pub fn lock_path(&self, state_imessage_dir: &Path) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.signature().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        state_imessage_dir.join("locks").join(format!("{hex}.lock"))
    }

    pub fn spawn_config(&self) -> SpawnConfig {
        SpawnConfig::rpc(&self.cli, self.db.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(channel: serde_json::Value) -> AccountConfig {
        crate::config::parse(&json!({"channels": {"imessage": channel}}))
            .unwrap()
            .accounts[0]
            .clone()
    }

    #[test]
    fn remote_db_path_is_not_expanded_case_142() {
        let remote = Source::resolve(&account(
            json!({"remoteHost": "bot@mac", "dbPath": "~/Library/Messages/chat.db"}),
        ));
        assert_eq!(
            remote.spawn_config().args,
            vec!["rpc", "--db", "~/Library/Messages/chat.db"]
        );
        assert_eq!(remote.remote_source, "config");
        let local = Source::resolve(&account(json!({"dbPath": "~/Library/Messages/chat.db"})));
        assert!(
            !local.db.as_deref().unwrap().starts_with('~'),
            "expanded locally"
        );
    }

    #[test]
    fn wrappers_are_read_only_when_path_like_case_139_140() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("imsg-ssh");
        std::fs::write(
            &wrapper,
            "#!/bin/sh\nexec ssh -T bot@mac-mini.tailnet-1234.ts.net imsg \"$@\"\n",
        )
        .unwrap();
        let s = Source::resolve(&account(json!({"cliPath": wrapper.display().to_string()})));
        assert_eq!(
            s.remote_host.as_deref(),
            Some("bot@mac-mini.tailnet-1234.ts.net")
        );
        assert_eq!(s.remote_source, "detected");
        let bare = Source::resolve(&account(json!({"cliPath": "imsg"})));
        assert_eq!((bare.remote_host, bare.remote_source), (None, "none"));
    }

    #[test]
    fn lock_paths_follow_the_signature() {
        let a = Source::resolve(&account(json!({"dbPath": "/a.db"})));
        let b = Source::resolve(&account(json!({"dbPath": "/b.db"})));
        let dir = Path::new("/s/imessage");
        assert_ne!(a.lock_path(dir), b.lock_path(dir));
        let name = a
            .lock_path(dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(name.len(), 16 + ".lock".len());
    }
}
