//! The director state's control surface for `flowctl director ...`: list the servers with
//! their weight, health and counters; change a weight; disable (drain) or enable a server.
//! Every change is a new `DirectorSet` snapshot published like a rule swap; established
//! connections keep their server.

use std::collections::HashMap;
use std::sync::Arc;

use flowgate_control::protocol::{DirectorStatus, ServerStatus};
use flowgate_control::sync::SyncMonitor;
use flowgate_control::DirectorControl;
use flowgate_dataplane::director::{DirectorSet, SharedDirectors};

/// `DirectorControl` over the published director snapshot.
#[derive(Debug)]
pub struct DirectorHook {
    shared: Arc<SharedDirectors>,
    /// The connection sync's counters (`None`: sync off).
    sync: Option<SyncMonitor>,
    /// Servers disabled through the socket, with the weight they had (restored on enable).
    disabled: HashMap<(usize, usize), u32>,
}

impl DirectorHook {
    pub fn new(shared: Arc<SharedDirectors>) -> DirectorHook {
        DirectorHook {
            shared,
            sync: None,
            disabled: HashMap::new(),
        }
    }

    fn find(&self, director: &str, server: &str) -> Result<(usize, usize), String> {
        let set = self.shared.set.load();
        let (d, st) = set
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == director)
            .ok_or_else(|| format!("no director `{director}`"))?;
        let s = st
            .servers
            .iter()
            .position(|s| s.name == server)
            .ok_or_else(|| format!("director `{director}` has no server `{server}`"))?;
        Ok((d, s))
    }

    fn publish(&self, next: Result<DirectorSet, impl std::fmt::Display>) -> Result<(), String> {
        let next = next.map_err(|e| e.to_string())?;
        self.shared.set.store(Arc::new(next));
        Ok(())
    }
}

impl DirectorHook {
    /// `flowctl stats` shows the connection sync's counters too.
    pub fn with_sync(mut self, sync: Option<SyncMonitor>) -> DirectorHook {
        self.sync = sync;
        self
    }
}

impl DirectorControl for DirectorHook {
    fn sync(&self) -> Vec<(String, u64)> {
        self.sync
            .as_ref()
            .map(|m| {
                let t = m.totals();
                t.counters
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list(&self) -> Vec<DirectorStatus> {
        let set = self.shared.set.load();
        let totals = self.shared.totals();
        set.iter()
            .enumerate()
            .map(|(d, st)| DirectorStatus {
                counters: totals
                    .get(d)
                    .map(|t| t.named().into_iter().map(|(k, n, _)| (k, n)).collect())
                    .unwrap_or_default(),
                name: st.name.clone(),
                scheduler: format!("{:?}", st.scheduler).to_lowercase(),
                servers: st
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(s, srv)| {
                        let c = totals
                            .get(d)
                            .and_then(|t| t.servers.get(s))
                            .cloned()
                            .unwrap_or_default();
                        ServerStatus {
                            name: srv.name.clone(),
                            address: srv.address.to_string(),
                            weight: srv.weight,
                            enabled: !self.disabled.contains_key(&(d, s)),
                            up: srv.up,
                            connections: c.conns,
                            active: c.active,
                            inactive: c.inactive,
                            packets: c.packets_in + c.packets_out,
                            bytes: c.bytes_in + c.bytes_out,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Disable drains the server (weight 0: no new connections, established ones stay);
    /// enable gives it back the weight it had.
    fn set_enabled(&mut self, director: &str, server: &str, enabled: bool) -> Result<(), String> {
        let (d, s) = self.find(director, server)?;
        let set = self.shared.set.load();
        let current = set
            .get(d)
            .and_then(|st| st.servers.get(s))
            .map(|x| x.weight)
            .unwrap_or(0);
        if enabled {
            let Some(weight) = self.disabled.remove(&(d, s)) else {
                return Ok(());
            };
            self.publish(set.with_weight(d, s, weight))
        } else {
            if self.disabled.contains_key(&(d, s)) {
                return Ok(());
            }
            self.publish(set.with_weight(d, s, 0))?;
            self.disabled.insert((d, s), current);
            Ok(())
        }
    }

    fn set_weight(&mut self, director: &str, server: &str, weight: u32) -> Result<(), String> {
        let (d, s) = self.find(director, server)?;
        if weight > u32::from(u16::MAX) {
            return Err(format!("weight {weight} out of range (expected 0..=65535)"));
        }
        if let Some(saved) = self.disabled.get_mut(&(d, s)) {
            // disabled: the new weight applies when it is enabled again
            *saved = weight;
            return Ok(());
        }
        let set = self.shared.set.load();
        self.publish(set.with_weight(d, s, weight))
    }
}
