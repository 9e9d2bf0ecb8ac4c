//! The state folder a host hands to a plugin must be private: whoever else can write there can
//! swap the pairing and allow stores or the cursor (ssh's StrictModes rule). Readable by
//! others is the user's choice. Host and plugin both check it at start, with this one rule.

use std::path::Path;

/// Why a state folder with this owner and mode is unsafe for a process running as `me`, or
/// `None`. `own_folder_hint` says how to pick another folder (host-stub: `--state-dir`).
pub fn folder_problem(
    dir: &Path,
    mode: u32,
    owner: u32,
    me: u32,
    own_folder_hint: &str,
) -> Option<String> {
    let shown = dir.display();
    if owner != me {
        return Some(format!(
            "state folder {shown} belongs to uid {owner}, not to you (uid {me}); \
             use a folder of your own{own_folder_hint} or run chown {me} {shown}"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "state folder {shown} is writable by group or others (mode {:04o}); \
             run chmod 700 {shown}",
            mode & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_owned_folder_others_cannot_write_passes() {
        let dir = Path::new("/x/state");
        assert_eq!(
            folder_problem(dir, 0o40775, 501, 501, "").as_deref(),
            Some("state folder /x/state is writable by group or others (mode 0775); run chmod 700 /x/state")
        );
        assert!(folder_problem(dir, 0o41777, 501, 501, "").is_some());
        let foreign = folder_problem(dir, 0o40700, 0, 501, " (--state-dir)").unwrap();
        assert!(foreign.contains("belongs to uid 0") && foreign.contains("(--state-dir)"));
        assert_eq!(folder_problem(dir, 0o40700, 501, 501, ""), None);
        assert_eq!(folder_problem(dir, 0o40755, 501, 501, ""), None);
    }
}
