//! S5 (provider burst) of `driftless bench`: the parts that need no provider process. The whole
//! scenario (a `burst_provider` process, a server, kill -9) is run by `scripts/bench.sh` with
//! `S5=1`; see docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use driftless_server::Config;
use driftless_server::bench::s5::{
    immediate_batch_ceiling, missing_acknowledged, server_config, summary_version,
};
use driftless_server::config::BridgeKind;
use serde_json::json;

#[test]
fn the_version_is_read_from_the_summary_the_provider_wrote() {
    assert_eq!(summary_version("burst 17 v0"), Some(0));
    assert_eq!(summary_version("burst 17 v123"), Some(123));
    assert_eq!(summary_version("burst 17"), None);
    assert_eq!(summary_version("burst 17 vx"), None);
}

#[test]
fn an_acknowledged_change_is_missing_unless_an_equal_or_later_version_is_stored() {
    let acked: BTreeMap<String, u64> = [("a", 3), ("b", 3), ("c", 3), ("d", 0)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let found: BTreeMap<String, u64> = [("a", 3), ("b", 4), ("c", 2)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let missing = missing_acknowledged(&acked, &found);
    assert_eq!(
        missing,
        vec![("c".to_owned(), Some(2)), ("d".to_owned(), None)],
        "an older version and an absent document are both missing"
    );
    assert!(missing_acknowledged(&acked, &acked).is_empty());
}

#[test]
fn the_generated_config_is_a_google_bridge_to_the_provider() {
    let ready = json!({
        "ready": true,
        "api_base": "http://127.0.0.1:4000/calendar/v3/",
        "token_url": "http://127.0.0.1:4000/token",
        "calendar_id": "primary",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "refresh_token": "refresh-1",
    });
    let text = server_config("127.0.0.1:4001", Path::new("/tmp/x y/data"), &ready, 20).unwrap();
    let config = Config::from_toml_str_env(&text, &|name| match name {
        "DRIFTLESS_S5_CLIENT_SECRET" => Some("secret-1".into()),
        "DRIFTLESS_S5_REFRESH_TOKEN" => Some("refresh-1".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:4001");
    assert_eq!(config.data_dir, Path::new("/tmp/x y/data"));
    let [bridge] = config.bridges.as_slice() else {
        panic!("one bridge expected: {:?}", config.bridges);
    };
    assert_eq!(bridge.kind, BridgeKind::GoogleCalendar);
    assert_eq!(bridge.poll_interval, Duration::from_millis(20));
    let google = bridge.google.as_ref().unwrap();
    assert_eq!(google.api_base, "http://127.0.0.1:4000/calendar/v3/");
    assert_eq!(google.client_id, "client-1");

    let incomplete = json!({"ready": true});
    assert!(server_config("127.0.0.1:1", Path::new("/tmp"), &incomplete, 20).is_err());
}

#[test]
fn the_ceiling_counts_every_value_of_every_durable_batch() {
    let dir = tempfile::tempdir().unwrap();
    let c = immediate_batch_ceiling(&dir.path().join("c.redb"), 10, 256, 0.2).unwrap();
    assert!(c.commits_per_s > 0.0);
    let per_commit = c.values_per_s / c.commits_per_s;
    assert!((per_commit - 10.0).abs() < 1e-6, "{per_commit}");
    assert!(
        !dir.path().join("c.redb").exists(),
        "the ceiling file is removed"
    );
}
