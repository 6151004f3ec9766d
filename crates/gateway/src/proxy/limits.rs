//! Limits after the access phase: the `rate_limit` policies' edge limits, an
//! application's WebSocket cap and its plan's usage limits (all-or-nothing).

use super::*;

impl Gateway {
    /// After the access phase: edge limits, the connection cap, the plan's limits.
    pub(super) async fn limits(
        &self,
        _parts: &request::Parts,
        ctx: &mut Context<'_>,
    ) -> Result<Option<ConnectionSlot>, Refusal> {
        self.edge_limits(ctx).await?;
        let Some(app) = ctx.application.as_ref() else { return Ok(None) };
        let product = ctx.product;
        // The cap comes before the limits, so a refused connection consumes no quota.
        let app_slot = if ctx.websocket {
            match self.connections.try_open(&app.id, app.plan.max_connections).await {
                Ok(Some(slot)) => Some(slot),
                Ok(None) => return Err(Refusal::TooManyConnections),
                Err(e) => return Err(Refusal::CountersUnavailable(e.to_string())),
            }
        } else {
            None
        };
        let checks = plan_checks(product, app, &ctx.usage);
        match self.counters.authorize(&app.id, &checks, ctx.now).await {
            Ok(Decision::Allowed(_)) => {
                if let Some(analytics) = &self.analytics {
                    let usage = ctx.usage.0.iter().map(|(m, d)| (product.metrics.name(*m), *d));
                    analytics.record(&app.id, &product.system_name, usage, ctx.now);
                }
                Ok(app_slot)
            }
            Ok(Decision::Exceeded(status)) => {
                Err(Refusal::LimitsExceeded { answer: product.errors.limits_exceeded.clone(), status, now: ctx.now })
            }
            Err(e) => Err(Refusal::CountersUnavailable(e.to_string())),
        }
    }

    /// The `rate_limit` policies' checks, after every access phase and before the plan's
    /// limits. `Err` is the refusal.
    pub(super) async fn edge_limits(&self, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        if ctx.plan().edge_limits.is_empty() {
            return Ok(());
        }
        // Edge windows and buckets need milliseconds.
        let now_ms = self.clock.now_ms();
        for edge in std::mem::take(&mut ctx.plan_mut().edge_limits) {
            let decision = match (edge.redis, self.counters.redis()) {
                (true, Some(redis)) => match redis.edge(&edge.checks, now_ms).await {
                    Ok(d) => d,
                    Err(e) if redis.mode() == FailureMode::Strict => {
                        return Err(Refusal::CountersUnavailable(e.to_string()));
                    }
                    // `allow` and `resilient`: this node's own counts meanwhile.
                    Err(_) => self.edge.check(&edge.checks, now_ms),
                },
                _ => self.edge.check(&edge.checks, now_ms),
            };
            if let EdgeDecision::Refused { retry_after_ms, .. } = decision {
                let secs = u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(1);
                return Err(Refusal::EdgeLimited { answer: edge.refusal, retry_after_secs: Some(secs) });
            }
            for (key, max) in &edge.connections {
                // In Redis: a lease like a WebSocket's under max_connections (renewed by
                // this node, freed by its expiry if the node dies).
                let place: Option<Held> = match (edge.redis, self.counters.redis()) {
                    (true, Some(_)) => match self.connections.try_open(&format!("edge:{key}"), Some(*max)).await {
                        Ok(slot) => slot.map(|s| Box::new(s) as Held),
                        Err(e) => return Err(Refusal::CountersUnavailable(e.to_string())),
                    },
                    _ => self.edge.acquire(key, *max).map(|g| Box::new(g) as Held),
                };
                match place {
                    Some(p) => ctx.plan_mut().held.push(p),
                    None => {
                        ctx.plan_mut().held.clear();
                        return Err(Refusal::EdgeLimited { answer: edge.refusal.clone(), retry_after_secs: None });
                    }
                }
            }
        }
        Ok(())
    }
}
