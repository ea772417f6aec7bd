//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one acts at a time.
//!
//! Every write to the Lease carries the resourceVersion it was read at, so two replicas
//! racing for it cannot both win: the apiserver accepts one write and refuses the other
//! with 409 Conflict. Expiry is judged on this replica's own clock, from when it last
//! saw the Lease change (as client-go does), never by comparing clocks across machines.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::Error;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The leader gives up (stops acting) if it could not renew for this long, well before
/// the Lease expires for the others.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the Lease is renewed, or its holder checked.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The Lease's resourceVersion when last read, and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: None,
        }
    }

    fn object(&self) -> String {
        format!("Lease {}/{}", self.api.namespace().unwrap_or_default(), self.name)
    }

    /// Takes the Lease if it is free or expired, renews it if it is ours; `Ok(true)`
    /// when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.name).await.map_err(Error::kube("read", self.object()))? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.held_spec(&LeaseSpec::default(), now, true)),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await).map(|_| true);
        };

        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => Instant::now(),
        };
        self.observed = Some((version, seen_at));

        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec.lease_duration_seconds.map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(1) as u64));
        if !mine && holder.is_some() && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let updated = Lease { spec: Some(self.held_spec(&spec, now, !mine)), ..lease };
        self.write(self.api.replace(&self.name, &PostParams::default(), &updated).await)
    }

    /// Gives the Lease up so that a standby takes over at once, not after it expires.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(lease) = self.api.get_opt(&self.name).await.map_err(Error::kube("read", self.object()))? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let released = Lease { spec: Some(LeaseSpec { holder_identity: None, renew_time: None, ..spec }), ..lease };
        self.write(self.api.replace(&self.name, &PostParams::default(), &released).await).map(|_| ())
    }

    fn held_spec(&self, old: &LeaseSpec, now: MicroTime, taking_over: bool) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            renew_time: Some(now.clone()),
            acquire_time: if taking_over { Some(now) } else { old.acquire_time.clone() },
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
            ..old.clone()
        }
    }

    /// A write that lost a race (409) means someone else holds the Lease now.
    fn write(&mut self, result: Result<Lease, kube::Error>) -> Result<bool, Error> {
        match result {
            Ok(lease) => {
                self.observed = lease.metadata.resource_version.map(|version| (version, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(Error::kube("write", self.object())(error)),
        }
    }
}
