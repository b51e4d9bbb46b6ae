//! The README's configuration tables are generated from the keys the code
//! reads. Run with `SIGHTLINE_BLESS=1` to rewrite them after changing a key.

use agent_core::config::{reference_table, replace_section};

fn check_section(name: &str, body: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let fresh = replace_section(&readme, name, body).unwrap_or_else(|| {
        panic!("README.md lacks the markers <!-- begin {name} --> / <!-- end {name} -->")
    });
    if fresh != readme {
        if std::env::var_os("SIGHTLINE_BLESS").is_some() {
            std::fs::write(&path, fresh).expect("write README.md");
        } else {
            panic!(
                "README.md section {name} is stale: run `SIGHTLINE_BLESS=1 cargo test -p sightline-e2e --test readme -- --test-threads=1`"
            );
        }
    }
}

#[test]
fn readme_lists_every_infra_key() {
    check_section(
        "infra-keys",
        &reference_table(agent_core::cli::all_keys::<sightline_infra::InfraConfig>()),
    );
}

#[test]
fn readme_lists_every_collector_key() {
    check_section(
        "collector-keys",
        &reference_table(sightline_collector::settings::COLLECTOR_KEYS),
    );
}

#[test]
fn readme_lists_every_log_key() {
    check_section(
        "log-keys",
        &reference_table(agent_core::cli::all_keys::<sightline_log::LogConfig>()),
    );
}

#[test]
fn readme_lists_every_db_key() {
    check_section(
        "db-keys",
        &reference_table(agent_core::cli::all_keys::<sightline_db::DbConfig>()),
    );
}

#[test]
fn readme_lists_every_url_key() {
    check_section(
        "url-keys",
        &reference_table(agent_core::cli::all_keys::<sightline_url::UrlConfig>()),
    );
}
