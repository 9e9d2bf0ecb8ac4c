//! Where outbound media may come from (issue 21, item 7). A host's `send` names files by
//! path; without a limit, anything that can steer the host's media list (a prompt-injected
//! agent, say) can mail out any file the gateway user can read. With `mediaLocalRoots` (the
//! channel's) or `HostFeatures::media_local_roots` (the host's) set, a media path must
//! resolve to a file under one of them. Both set: a path may lie under either list — the
//! host's roots are where its own tools write, the config's are what the operator adds; an
//! intersection of two unrelated lists would refuse everything.

use std::path::{Path, PathBuf};

/// The roots in force: the union of the config's and the host's; `None` when neither is set
/// (media paths are then not restricted, as before).
pub fn effective_roots(config: Option<&[String]>, host: Option<&[String]>) -> Option<Vec<String>> {
    if config.is_none() && host.is_none() {
        return None;
    }
    let mut roots: Vec<String> = Vec::new();
    for root in config.into_iter().chain(host).flatten() {
        if !roots.contains(root) {
            roots.push(root.clone());
        }
    }
    Some(roots)
}

/// The roots as named in errors.
fn shown(roots: &[String]) -> String {
    if roots.is_empty() {
        "none: no outbound media is allowed".into()
    } else {
        roots.join(", ")
    }
}

/// The canonical path of `path` when it lies under one of `roots`, else why not. The last
/// component is checked with `lstat` before anything is resolved: a symlink there could be
/// re-pointed between this check and imsg reading the file, and the host has no reason to
/// hand over a link rather than the file. Symlinked folders (a root itself, or a folder
/// inside one) are followed, and the resolved path is what must lie under a resolved root,
/// so `..` and links that lead outside are refused. A root that does not resolve (missing,
/// relative) matches nothing.
pub fn resolve_under(path: &Path, roots: &[String]) -> Result<PathBuf, String> {
    let at = path.display();
    if !path.is_absolute() {
        // Relative to what? The gateway's working directory is nothing the host chose.
        return Err(format!(
            "media path must be absolute when media roots are set: {at} (roots: {})",
            shown(roots)
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!(
                "media is a symbolic link: {at} (roots: {}); pass the file itself",
                shown(roots)
            ))
        }
        Ok(_) => {}
        Err(_) => return Err(format!("media not found: {at}")),
    }
    let real = std::fs::canonicalize(path).map_err(|_| format!("media not found: {at}"))?;
    let inside = roots.iter().any(|root| {
        let root = Path::new(root);
        root.is_absolute()
            && std::fs::canonicalize(root).is_ok_and(|root| real.starts_with(&root) && real != root)
    });
    if !inside {
        return Err(format!(
            "media outside the allowed roots: {at} (roots: {})",
            shown(roots)
        ));
    }
    if real.to_str().is_none() {
        return Err(format!("media path is not valid UTF-8 once resolved: {at}"));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree {
        _dir: tempfile::TempDir,
        /// Canonical: the temp folder itself may sit behind a symlink (macOS `/var`).
        base: PathBuf,
    }

    impl Tree {
        /// `base/root/in.jpg`, `base/root/sub/deep.jpg`, `base/outside/secret.txt`.
        fn new() -> Tree {
            let dir = tempfile::tempdir().unwrap();
            let base = std::fs::canonicalize(dir.path()).unwrap();
            std::fs::create_dir_all(base.join("root/sub")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            std::fs::write(base.join("root/in.jpg"), b"jpg").unwrap();
            std::fs::write(base.join("root/sub/deep.jpg"), b"jpg").unwrap();
            std::fs::write(base.join("outside/secret.txt"), b"key").unwrap();
            Tree { _dir: dir, base }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.base.join(rel)
        }

        fn roots(&self, rels: &[&str]) -> Vec<String> {
            rels.iter()
                .map(|r| self.p(r).display().to_string())
                .collect()
        }
    }

    #[test]
    fn a_file_inside_a_root_resolves_to_itself() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        assert_eq!(
            resolve_under(&t.p("root/in.jpg"), &roots),
            Ok(t.p("root/in.jpg"))
        );
        assert_eq!(
            resolve_under(&t.p("root/sub/deep.jpg"), &roots),
            Ok(t.p("root/sub/deep.jpg"))
        );
        // Any root of the list will do.
        let two = t.roots(&["elsewhere", "outside"]);
        assert!(resolve_under(&t.p("outside/secret.txt"), &two).is_ok());
    }

    #[test]
    fn a_file_outside_every_root_is_refused_naming_path_and_roots() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        let err = resolve_under(&t.p("outside/secret.txt"), &roots).unwrap_err();
        assert!(
            err.starts_with("media outside the allowed roots: "),
            "{err}"
        );
        assert!(
            err.contains(&t.p("outside/secret.txt").display().to_string()),
            "{err}"
        );
        assert!(err.contains(&roots[0]), "{err}");
        // A root's own folder is not a file under it, nor is a sibling sharing its prefix.
        std::fs::write(t.p("rootless.txt"), b"x").unwrap();
        assert!(resolve_under(&t.p("rootless.txt"), &roots).is_err());
        assert!(resolve_under(&t.p("root"), &roots).is_err());
    }

    #[test]
    fn a_dot_dot_escape_is_refused() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        let escape = t.p("root/sub/../../outside/secret.txt");
        let err = resolve_under(&escape, &roots).unwrap_err();
        assert!(err.starts_with("media outside the allowed roots"), "{err}");
        // `..` that stays inside is fine, and the resolved path is what is sent.
        assert_eq!(
            resolve_under(&t.p("root/sub/../in.jpg"), &roots),
            Ok(t.p("root/in.jpg"))
        );
    }

    #[test]
    fn a_symlinked_last_component_is_refused_even_pointing_inside() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        symlink(t.p("outside/secret.txt"), t.p("root/link-out.jpg")).unwrap();
        symlink(t.p("root/in.jpg"), t.p("root/link-in.jpg")).unwrap();
        for link in ["root/link-out.jpg", "root/link-in.jpg"] {
            let err = resolve_under(&t.p(link), &roots).unwrap_err();
            assert!(
                err.starts_with("media is a symbolic link: "),
                "{link}: {err}"
            );
            assert!(err.contains(&roots[0]), "{err}");
        }
    }

    #[test]
    fn a_symlinked_folder_inside_a_root_cannot_lead_out() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        symlink(t.p("outside"), t.p("root/door")).unwrap();
        let err = resolve_under(&t.p("root/door/secret.txt"), &roots).unwrap_err();
        assert!(err.starts_with("media outside the allowed roots"), "{err}");
    }

    #[test]
    fn a_symlinked_root_folder_is_followed() {
        let t = Tree::new();
        symlink(t.p("root"), t.p("root-link")).unwrap();
        let roots = t.roots(&["root-link"]);
        // Named through the link or through the real folder: both lie under the root.
        assert_eq!(
            resolve_under(&t.p("root-link/in.jpg"), &roots),
            Ok(t.p("root/in.jpg"))
        );
        assert_eq!(
            resolve_under(&t.p("root/in.jpg"), &roots),
            Ok(t.p("root/in.jpg"))
        );
    }

    #[test]
    fn a_relative_path_is_refused() {
        let t = Tree::new();
        let roots = t.roots(&["root"]);
        let err = resolve_under(Path::new("root/in.jpg"), &roots).unwrap_err();
        assert!(
            err.starts_with("media path must be absolute when media roots are set: root/in.jpg"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_unusable_roots_match_nothing() {
        let t = Tree::new();
        let err = resolve_under(&t.p("root/in.jpg"), &[]).unwrap_err();
        assert!(err.contains("roots: none"), "{err}");
        let roots = vec!["root".to_string(), t.p("gone").display().to_string()];
        assert!(resolve_under(&t.p("root/in.jpg"), &roots).is_err());
        assert_eq!(
            resolve_under(&t.p("root/missing.jpg"), &t.roots(&["root"])),
            Err(format!(
                "media not found: {}",
                t.p("root/missing.jpg").display()
            ))
        );
    }

    #[test]
    fn roots_are_the_union_of_config_and_host() {
        let a = vec!["/a".to_string()];
        let b = vec!["/b".to_string(), "/a".to_string()];
        assert_eq!(effective_roots(None, None), None);
        assert_eq!(effective_roots(Some(&a), None), Some(a.clone()));
        assert_eq!(effective_roots(None, Some(&b)), Some(b.clone()));
        assert_eq!(
            effective_roots(Some(&a), Some(&b)),
            Some(vec!["/a".to_string(), "/b".to_string()])
        );
        assert_eq!(effective_roots(Some(&[]), None), Some(Vec::new()));
    }
}
