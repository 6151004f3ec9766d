//! A WebSocket after the upgrade, as the gateway governs it: every message is checked
//! against the *current* configuration (metering on the plan's limits, as a request
//! would be), the connection closes when its application is suspended, deleted or its
//! key changes (within a moment of the change: connections watch the snapshot's
//! generation instead of polling), and it closes with 1001 when the gateway drains.
//! Concurrent connections per application are capped by the plan's `max_connections`.

use crate::analytics::Analytics;
use crate::mapping::Usage;
use crate::policy::Credential;
use crate::policy::websocket::OnLimitExceeded;
use crate::relay::{CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, FrameInfo, Verdict};
use crate::snapshot::{Application, Product, SnapshotHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tollgate_counters::{Check, Clock, Counters, Decision};

/// The checks a usage makes against an application's plan limits.
pub(crate) fn plan_checks<'a>(product: &'a Product, app: &Application, usage: &Usage) -> Vec<Check<'a>> {
    app.plan
        .limits
        .iter()
        .filter_map(|l| {
            let delta = usage.delta(l.metric);
            (delta > 0).then(|| Check { metric: product.metrics.name(l.metric), period: l.period, max: l.value, delta })
        })
        .collect()
}

/// Open WebSocket connections per application, in this process.
#[derive(Debug, Default)]
pub struct Connections(Mutex<HashMap<Box<str>, u32>>);

/// One open connection; dropping it frees its place.
pub struct ConnectionSlot {
    owner: Arc<Connections>,
    application: Box<str>,
}

impl Connections {
    /// Takes a place for `application` unless `max` are open already.
    pub fn try_open(self: &Arc<Self>, application: &str, max: Option<u32>) -> Option<ConnectionSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(application.into()).or_insert(0);
        if max.is_some_and(|m| *n >= m) {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot { owner: self.clone(), application: application.into() })
    }

    pub fn open(&self, application: &str) -> u32 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(application).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.owner.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.application) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.application);
            }
        }
    }
}

pub(crate) struct Session {
    pub snapshot: SnapshotHandle,
    pub host: Box<str>,
    pub app_id: Box<str>,
    pub credential: Credential,
    pub counters: Arc<Counters>,
    pub clock: Arc<dyn Clock>,
    pub analytics: Option<Arc<Analytics>>,
}

impl Session {
    /// The product and application as the current configuration has them, or why the
    /// connection may no longer stay open.
    fn current(&self) -> Result<(Arc<Product>, Arc<Application>), &'static str> {
        let snapshot = self.snapshot.load();
        let product = snapshot.product_for_host(&self.host).ok_or("product no longer published")?.clone();
        let app = product.reauthorize(&self.credential, &self.app_id)?;
        Ok((product, app))
    }

    /// Decides on one data frame: its message (on the first frame) and its bytes are
    /// metered on the plan's limits when the `websocket` policy says so, together and
    /// all-or-nothing like a request.
    pub async fn frame(&self, frame: FrameInfo) -> Verdict {
        let (product, app) = match self.current() {
            Ok(x) => x,
            Err(reason) => return Verdict::Close(CLOSE_POLICY_VIOLATION, reason),
        };
        let ws = &product.websocket_config;
        let mut usage = Usage::default();
        if let Some((metric, direction, delta)) = ws.meter
            && frame.starts_message
            && direction.includes(frame.from_client)
        {
            usage.add(metric, delta);
        }
        if let Some((metric, direction)) = ws.meter_bytes
            && direction.includes(frame.from_client)
            && frame.payload_len > 0
        {
            usage.add(metric, frame.payload_len);
        }
        if usage.is_empty() {
            return Verdict::Forward;
        }
        let usage = usage.with_ancestors(&product.metrics);
        let checks = plan_checks(&product, &app, &usage);
        let now = self.clock.now();
        match self.counters.authorize(&app.id, &checks, now).await {
            Ok(Decision::Allowed(_)) => {
                if let Some(a) = &self.analytics {
                    a.record(
                        &app.id,
                        &product.system_name,
                        usage.0.iter().map(|(m, d)| (product.metrics.name(*m), *d)),
                        now,
                    );
                }
                Verdict::Forward
            }
            // Only whole messages can be dropped; a frame inside one closes the connection.
            Ok(Decision::Exceeded(_)) => match ws.on_limit_exceeded {
                OnLimitExceeded::Drop if frame.starts_message => Verdict::Drop,
                _ => Verdict::Close(CLOSE_POLICY_VIOLATION, "usage limits exceeded"),
            },
            Err(_) => Verdict::Close(1011, "usage counters unavailable"),
        }
    }

    /// Resolves when the connection must close: its application was revoked by a
    /// configuration change (1008), or the gateway drains (1001).
    pub async fn until_closed(
        &self,
        mut generations: watch::Receiver<u64>,
        mut draining: watch::Receiver<bool>,
    ) -> (u16, &'static str) {
        loop {
            tokio::select! {
                r = generations.changed() => {
                    if r.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if let Err(reason) = self.current() {
                        return (CLOSE_POLICY_VIOLATION, reason);
                    }
                }
                drained = async { draining.wait_for(|d| *d).await.is_ok() } => {
                    if drained {
                        return (CLOSE_GOING_AWAY, "the gateway is shutting down");
                    }
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
