//! Google Calendar push notifications through the real server and the fake Calendar v3 server:
//! the bridge registers a watch channel at `{public_url}/webhooks/google/{bridge}` after its
//! first round; `POST /webhooks/google/{bridge}` refuses a wrong token, ignores a replayed
//! message number, turns a burst into one pull and answers at once; a change at Google reaches
//! the document through a notification alone; a channel is renewed before it expires, with
//! notifications on both channels accepted until the old one is stopped.
//!
//! The poll interval is an hour, so every pull seen here comes from a webhook (or the round at
//! startup).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless_bridges::google::client::Secret;
use driftless_server::config::{BridgeConfig, BridgeKind, GoogleCalendarConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::Api;
use driftless_tests::fakes::google::{Fault, GoogleFake};
use serde_json::{Value, json};

const CAL: &str = "primary";
const BRIDGE: &str = "gcal";

fn bridge(fake: &GoogleFake) -> BridgeConfig {
    let (client_id, secret, refresh) = fake.credentials();
    BridgeConfig {
        id: BRIDGE.into(),
        kind: BridgeKind::GoogleCalendar,
        workspace: "default".into(),
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        google: Some(GoogleCalendarConfig {
            calendar_id: CAL.into(),
            client_id,
            client_secret: Secret::new(secret),
            refresh_token: Secret::new(refresh),
            token_url: fake.token_url(),
            api_base: fake.api_base(),
        }),
        hubspot: None,
        graph: None,
        salesforce: None,
    }
}

fn meeting() -> Value {
    json!({
        "summary": "Planning",
        "start": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-01T11:00:00+01:00", "timeZone": "Europe/Berlin"},
    })
}

struct Env {
    fake: GoogleFake,
    server: TestServer,
    api: Api,
    http: reqwest::Client,
}

impl Env {
    async fn start(channel_lifetime: Option<Duration>) -> anyhow::Result<Self> {
        let fake = GoogleFake::start().await?;
        if let Some(lifetime) = channel_lifetime {
            fake.set_channel_lifetime(lifetime);
        }
        fake.insert(CAL, meeting())?;
        let config = bridge(&fake);
        let server = TestServer::start_with_config(move |c| {
            c.public_url = Some(format!("http://{}", c.listen));
            c.bridges = vec![config.clone()];
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self {
            fake,
            server,
            api,
            http: reqwest::Client::new(),
        })
    }

    /// `events.list` requests so far (each pull sends at least one).
    fn list_requests(&self) -> usize {
        self.fake
            .log()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
            .count()
    }

    /// Waits until `cond` holds.
    async fn until(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond(self) {
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The open channel (the only one), once registered.
    async fn only_channel(&self) -> anyhow::Result<String> {
        self.until("a registered channel", |e| {
            e.fake.open_channels(CAL).len() == 1
        })
        .await?;
        self.fake
            .open_channels(CAL)
            .pop()
            .context("no open channel")
    }

    /// POSTs a notification as Google would; returns the status.
    async fn post(&self, address: &str, headers: &[(&'static str, String)]) -> anyhow::Result<u16> {
        let mut req = self.http.post(address);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        Ok(req.send().await?.status().as_u16())
    }

    /// The next `exists` notification of `channel`, sent; returns the status.
    async fn notify(&self, channel: &str) -> anyhow::Result<u16> {
        let (address, headers) = self
            .fake
            .next_notification(channel, "exists")
            .context("no such channel in the fake")?;
        self.post(&address, &headers).await
    }

    /// Asserts no pull happens within a second (after `before` list requests).
    async fn no_pull_since(&self, before: usize, why: &str) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = self.list_requests();
        if now != before {
            bail!("{why}: {} pulls happened", now - before);
        }
        Ok(())
    }

    async fn title(&self) -> anyhow::Result<Value> {
        let all = self.api.records("calendar_event").await?;
        match all.as_slice() {
            [(_, record)] => Ok(record["title"].clone()),
            _ => bail!("expected one calendar_event, got {all:?}"),
        }
    }
}

#[tokio::test]
async fn notifications_are_verified_deduplicated_and_coalesced_into_one_pull() -> anyhow::Result<()>
{
    let env = Env::start(None).await?;
    let channel = env.only_channel().await?;
    assert_eq!(
        env.fake.channel_address(&channel).as_deref(),
        Some(format!("{}/webhooks/google/{BRIDGE}", env.server.http_url()).as_str()),
        "callback url"
    );
    // Quiet after the startup round (the channel's `sync` message triggers nothing).
    let before = env.list_requests();
    env.no_pull_since(before, "after the sync message").await?;

    // A wrong token, an unknown channel: refused, nothing triggered.
    let (address, mut headers) = env
        .fake
        .next_notification(&channel, "exists")
        .context("channel")?;
    for h in headers.iter_mut() {
        if h.0 == "X-Goog-Channel-Token" {
            h.1 = "a-guess".into();
        }
    }
    assert_eq!(env.post(&address, &headers).await?, 401, "wrong token");
    let mut unknown = headers.clone();
    for h in unknown.iter_mut() {
        if h.0 == "X-Goog-Channel-ID" {
            h.1 = "someone-elses".into();
        }
    }
    assert_eq!(env.post(&address, &unknown).await?, 401, "unknown channel");
    let no_token: Vec<_> = headers
        .iter()
        .filter(|h| h.0 != "X-Goog-Channel-Token")
        .cloned()
        .collect();
    assert_eq!(env.post(&address, &no_token).await?, 401, "no token");
    env.no_pull_since(before, "after forged notifications")
        .await?;

    // A burst of 20 `exists` becomes one pull; each is answered at once.
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.push(
            env.fake
                .next_notification(&channel, "exists")
                .context("channel")?,
        );
    }
    let last = burst.last().cloned().context("burst")?;
    let statuses = futures::future::join_all(burst.iter().map(|(a, h)| env.post(a, h))).await;
    for status in statuses {
        assert_eq!(status?, 200);
    }
    env.until("the pull of the burst", |e| e.list_requests() > before)
        .await?;
    env.no_pull_since(before + 1, "one pull for the burst")
        .await?;

    // A replayed message number (a duplicate delivery) is ignored.
    assert_eq!(env.post(&last.0, &last.1).await?, 200);
    env.no_pull_since(before + 1, "a replayed message").await?;

    // A change at Google plus its notification reaches the document, without a manual sync.
    assert_eq!(env.title().await?, "Planning");
    let id = env
        .fake
        .events(CAL)
        .into_keys()
        .next()
        .context("the meeting")?;
    env.fake
        .patch(CAL, &id, json!({"summary": "Planning (moved)"}))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.title().await? != "Planning (moved)" {
        if Instant::now() > deadline {
            bail!("the change did not arrive through the webhook");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn channels_are_renewed_before_expiry_with_an_overlap() -> anyhow::Result<()> {
    // Channels live 8 s: renewal is due halfway.
    let env = Env::start(Some(Duration::from_secs(8))).await?;
    let first = env.only_channel().await?;

    // Renewed before the first one expires, without any manual round: the fake lists only
    // unexpired, unstopped channels, so two of them means the old one is still alive.
    env.until("a second channel", |e| e.fake.open_channels(CAL).len() == 2)
        .await?;
    let second = env
        .fake
        .open_channels(CAL)
        .into_iter()
        .find(|c| *c != first)
        .context("the new channel")?;
    assert_eq!(
        env.fake.channel_address(&second),
        env.fake.channel_address(&first)
    );

    // During the overlap both channels are accepted.
    let before = env.list_requests();
    assert_eq!(env.notify(&first).await?, 200, "old channel, overlap");
    assert_eq!(env.notify(&second).await?, 200, "new channel, overlap");
    env.until("the pull", |e| e.list_requests() > before)
        .await?;

    // The round after the renewal stops the old channel; it is refused from then on.
    env.until("the old channel stopped", |e| {
        e.fake.open_channels(CAL) == vec![second.clone()]
    })
    .await?;
    let (address, headers) = env
        .fake
        .next_notification(&first, "exists")
        .context("old channel")?;
    assert_eq!(
        env.post(&address, &headers).await?,
        401,
        "old channel, stopped"
    );
    assert_eq!(env.notify(&second).await?, 200, "new channel");
    Ok(())
}

#[tokio::test]
async fn channels_are_stopped_on_shutdown_and_registered_again_after_restart() -> anyhow::Result<()>
{
    let mut env = Env::start(None).await?;
    let first = env.only_channel().await?;
    env.server.stop().await?;
    assert!(
        env.fake.open_channels(CAL).is_empty(),
        "stopped on shutdown"
    );
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    let second = env.only_channel().await?;
    assert_ne!(first, second);
    Ok(())
}

#[tokio::test]
async fn open_channels_and_seen_message_numbers_survive_a_restart() -> anyhow::Result<()> {
    let mut env = Env::start(None).await?;
    let channel = env.only_channel().await?;
    let before = env.list_requests();
    let (address, headers) = env
        .fake
        .next_notification(&channel, "exists")
        .context("channel")?;
    assert_eq!(env.post(&address, &headers).await?, 200);
    env.until("the pull", |e| e.list_requests() > before)
        .await?;

    // The stop on shutdown fails: the channel stays open at Google, and driftless keeps it.
    env.fake.inject(Fault::Unavailable, 1);
    env.server.stop().await?;
    assert_eq!(env.fake.open_channels(CAL), vec![channel.clone()]);
    let before_restart = env.list_requests();
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    env.until("the startup round", |e| e.list_requests() > before_restart)
        .await?;
    let settled = env.list_requests();

    // The same message again (a late duplicate): ignored; a new one: a pull.
    assert_eq!(env.post(&address, &headers).await?, 200);
    env.no_pull_since(settled, "a message seen before the restart")
        .await?;
    assert_eq!(env.notify(&channel).await?, 200);
    env.until("the pull", |e| e.list_requests() > settled)
        .await?;
    assert_eq!(
        env.fake.open_channels(CAL),
        vec![channel],
        "no second channel"
    );
    Ok(())
}
