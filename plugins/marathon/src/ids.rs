//! Marathon's path ids (`/prod/web`) and the task ids derived from them.

/// Canonicalizes an app or group id: absolute, `//` collapsed, no trailing
/// `/`, `.` and `..` resolved against `base` for relative ids.
pub fn canonical(id: &str, base: &str) -> String {
    let mut parts: Vec<&str> = if id.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in id.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Checks each segment of a canonical id against Marathon's rule.
pub fn check(id: &str) -> Result<(), String> {
    if id == "/" {
        return Err("path must not be the root group".into());
    }
    for seg in id.split('/').filter(|s| !s.is_empty()) {
        if !segment_ok(seg) {
            return Err(format!(
                "must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$' (segment {seg:?})"
            ));
        }
    }
    Ok(())
}

fn segment_ok(seg: &str) -> bool {
    seg.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// The prefix of an app's task ids: `/prod/web` → `prod_web`.
pub fn task_prefix(app_id: &str) -> String {
    app_id.trim_start_matches('/').replace('/', "_")
}

/// The app id a task id belongs to, for the formats Marathon writes
/// (`a_b.instance-<uuid>._app.<n>`, `a_b.marathon-<uuid>`, `a_b.<uuid>`).
pub fn app_of_task(task_id: &str) -> Option<String> {
    let (prefix, rest) = task_id.split_once('.')?;
    if prefix.is_empty() || rest.is_empty() {
        return None;
    }
    Some(format!("/{}", prefix.replace('_', "/")))
}

/// The parent group of an id: `/a/b/c` → `/a/b`, `/a` → `/`.
pub fn parent(id: &str) -> String {
    match id.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((p, _)) => p.into(),
    }
}

/// Whether `id` lies in group `group` (at any depth).
pub fn in_group(id: &str, group: &str) -> bool {
    group == "/" || id == group || id.starts_with(&format!("{group}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_whatever_slashes_clients_send() {
        assert_eq!(canonical("foo", "/"), "/foo");
        assert_eq!(canonical("//foo/", "/"), "/foo");
        assert_eq!(canonical("/prod//web", "/"), "/prod/web");
        assert_eq!(canonical("web", "/prod"), "/prod/web");
        assert_eq!(canonical("../db", "/prod/web"), "/prod/db");
        assert_eq!(canonical("a/./b", "/"), "/a/b");
    }

    #[test]
    fn segments_follow_marathons_rule() {
        assert!(check("/prod/web-1").is_ok());
        assert!(check("/a.b/c").is_ok());
        for bad in ["/", "/Web", "/a_b", "/-a", "/a-", "/a..b", "/a b"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_encode_the_app_id() {
        assert_eq!(task_prefix("/prod/web"), "prod_web");
        assert_eq!(
            app_of_task("prod_web.instance-1234._app.1").as_deref(),
            Some("/prod/web")
        );
        assert_eq!(app_of_task("nodot"), None);
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert!(in_group("/a/b", "/a"));
        assert!(!in_group("/ab", "/a"));
    }
}
