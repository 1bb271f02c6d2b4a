//! Picks the one waiting build a command is about, by id, id prefix or
//! derivation name.

use super::discovery::{Discovery, WaitingBuild};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no build is waiting{}", denied_hint(*.denied))]
    NoneWaiting { denied: usize },
    #[error("no waiting build matches `{query}`{}", denied_hint(*.denied))]
    NotFound { query: String, denied: usize },
    #[error("{} waiting builds match{}: {}; name one by its id", .ids.len(), query.as_ref().map(|q| format!(" `{q}`")).unwrap_or_default(), .ids.join(", "))]
    Ambiguous { query: Option<String>, ids: Vec<String> },
}

fn denied_hint(denied: usize) -> String {
    if denied == 0 {
        String::new()
    } else {
        format!(
            " that this user can reach; permission denied for {denied} build director{}: daemon builds need root (run it with sudo)",
            if denied == 1 { "y" } else { "ies" }
        )
    }
}

/// Returns the build that `query` names, or the only one when it is `None`.
pub fn select(discovery: Discovery, query: Option<&str>) -> Result<WaitingBuild, SelectError> {
    let denied = discovery.denied.len();
    let mut builds = discovery.builds;
    if let Some(query) = query {
        if let Some(exact) = builds.iter().position(|build| build.meta.id == query) {
            return Ok(builds.swap_remove(exact));
        }
        builds.retain(|build| build.meta.id.starts_with(query) || build.meta.drv == query);
    }
    match builds.len() {
        1 => Ok(builds.remove(0)),
        0 => Err(match query {
            Some(query) => SelectError::NotFound { query: crate::sanitize::sanitize(query), denied },
            None => SelectError::NoneWaiting { denied },
        }),
        _ => Err(SelectError::Ambiguous {
            query: query.map(crate::sanitize::sanitize),
            ids: builds.iter().map(|b| format!("{} ({})", b.meta.id, crate::sanitize::sanitize(&b.meta.drv))).collect(),
        }),
    }
}
