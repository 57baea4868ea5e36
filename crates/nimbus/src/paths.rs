//! Where Nimbus keeps its files when no `--data` is given.

use std::path::PathBuf;

/// `$XDG_DATA_HOME/nimbus`, else `$HOME/.local/share/nimbus`, else `./.nimbus`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("nimbus");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/nimbus");
    }
    PathBuf::from(".nimbus")
}

/// The admin token file inside a data directory.
pub fn admin_token_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin.token")
}
