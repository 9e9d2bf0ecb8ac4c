//! The string rules of channel-behaviour.md §1.2, §8.2 and §8.3, as pure predicates.

/// The safe-executable rule for `cliPath`.
pub fn is_safe_executable(value: &str) -> bool {
    const FORBIDDEN: &[char] = &[
        '\0', '\r', '\n', '\'', '"', ';', '&', '|', '`', '$', '<', '>',
    ];
    if value.is_empty() || value.contains(FORBIDDEN) {
        return false;
    }
    if is_path_like(value) {
        return true;
    }
    !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// A `cliPath` that names a file rather than a command looked up on `PATH`.
pub fn is_path_like(value: &str) -> bool {
    value.contains('/') || value.contains('\\') || value.starts_with('.') || value.starts_with('~')
}

/// The `remoteHost` rule: `host` or `user@host`, IPv6 in brackets, nothing an ssh or scp
/// command line could read as an option.
pub fn is_valid_remote_host(raw: &str) -> bool {
    let value = raw.trim();
    if value.is_empty()
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
        || value.starts_with(['-', '/', '\\'])
        || value.matches('@').count() > 1
        || value.starts_with('@')
        || value.ends_with('@')
    {
        return false;
    }
    let (user, host) = match value.split_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, value),
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(user) = user {
        if user.is_empty() || !user.chars().all(name_char) {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '%'));
    }
    !host.is_empty() && !host.starts_with('-') && host.chars().all(name_char)
}

/// The attachment-root rule: absolute, not `/`, no `..` segment, no NUL, `*` only as a whole
/// segment.
pub fn is_valid_root(value: &str) -> bool {
    if !value.starts_with('/') || value.contains('\0') {
        return false;
    }
    let segments: Vec<&str> = value.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return false;
    }
    segments
        .iter()
        .all(|s| *s != ".." && (*s == "*" || !s.contains('*')))
}

/// The remote-path rule (§8.3): the remote side may pass the path through a shell.
pub fn is_safe_remote_path(value: &str) -> bool {
    const FORBIDDEN: &[char] = &[
        '\\', '\'', '"', '`', '$', ';', '|', '&', '<', '>', '*', '?', '[', ']',
    ];
    value.starts_with('/')
        && !value
            .chars()
            .any(|c| c.is_control() || FORBIDDEN.contains(&c))
}

/// Characters of a path that passes [`is_safe_remote_path`] which the Mac user's shell
/// still splits or expands when the legacy scp protocol hands it the path: word splitting
/// (space), `~` and `=` expansion (zsh), braces, globbing qualifiers and comments (`()#^`),
/// history (`!`) and job specs (`%`). Such a path is only fetched in SFTP mode (§8.3).
pub fn needs_sftp(value: &str) -> bool {
    const SHELL_SENSITIVE: &[char] = &[' ', '~', '{', '}', '(', ')', '#', '!', '%', '^', '='];
    value.contains(SHELL_SENSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_paths() {
        for ok in [
            "imsg",
            "imsg-0.9",
            "/Applications/My Tools/imsg",
            "~/bin/imsg-ssh",
            "./imsg",
        ] {
            assert!(is_safe_executable(ok), "{ok}");
        }
        for bad in [
            "imsg; rm -rf ~",
            "-imsg",
            "",
            "im sg",
            "a$b",
            "/x/`y`",
            "a\nb",
            "imsg|x",
        ] {
            assert!(!is_safe_executable(bad), "{bad}");
        }
    }

    #[test]
    fn remote_hosts() {
        for ok in [
            "mac-mini",
            "bot@mac-mini.tailnet-1234.ts.net",
            "[::1]",
            "bot@[fe80::1%en0]",
        ] {
            assert!(is_valid_remote_host(ok), "{ok}");
        }
        for bad in [
            "-oProxyCommand=x",
            "bot@mac -oProxyCommand=x",
            "a b",
            "user@@host",
            "host:22",
            "user@host/x",
            "@host",
            "user@",
            "",
            "/host",
        ] {
            assert!(!is_valid_remote_host(bad), "{bad}");
        }
    }

    #[test]
    fn roots() {
        for ok in [
            "/Users/*/Library/Messages/Attachments",
            "/Volumes/relay/att",
            "/a",
        ] {
            assert!(is_valid_root(ok), "{ok}");
        }
        for bad in ["./att", "/", "/Users/b*/x", "/a/../b", "/a/**/b", "", "//"] {
            assert!(!is_valid_root(bad), "{bad}");
        }
    }

    #[test]
    fn remote_paths() {
        assert!(is_safe_remote_path(
            "/Users/bob/Library/Messages/Attachments/a b.jpg"
        ));
        for bad in ["/a/$x", "/a;b", "rel/x", "/a\nb", "/a[1]"] {
            assert!(!is_safe_remote_path(bad), "{bad}");
        }
        // Shell-sensitive but safe over SFTP: accepted, and marked for SFTP.
        for c in [' ', '~', '{', '}', '(', ')', '#', '!', '%', '^', '='] {
            let path = format!("/Users/bob/Library/Messages/Attachments/a{c}b.jpg");
            assert!(is_safe_remote_path(&path), "{path}");
            assert!(needs_sftp(&path), "{path}");
        }
        assert!(!needs_sftp(
            "/Users/bob/Library/Messages/Attachments/IMG_1.v2-x.jpg"
        ));
    }
}
