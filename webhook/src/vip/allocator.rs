//! Virtual IPs for Services: the I/O around `multicluster_core::vip`. Pools and claims come
//! from watch-fed caches; an address is taken by creating the `VipClaim` named after it, so when
//! two replicas pick the same address the API server refuses the second claim and that replica
//! moves to its next candidate.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use multicluster_core::api::{ClaimOwner, VipClaim, VipClaimSpec, VipPool};
use multicluster_core::keys::VIP;
use multicluster_core::vip::{self, VipDecision};

#[derive(Clone)]
pub struct Vips {
    pools: Store<VipPool>,
    claims: Store<VipClaim>,
    client: Client,
}

impl std::fmt::Debug for Vips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vips")
            .field("pools", &self.pools.len())
            .field("claims", &self.claims.len())
            .finish()
    }
}

/// Why a Service gets no VIP: the message the API server shows the user.
pub type Denial = String;

impl Vips {
    pub fn watch(client: Client) -> Self {
        Self {
            pools: crate::cache::watched(Api::all(client.clone()), "VipPools"),
            claims: crate::cache::watched(Api::all(client.clone()), "VipClaims"),
            client,
        }
    }

    pub async fn ready(&self) -> bool {
        self.pools.wait_until_ready().await.is_ok() && self.claims.wait_until_ready().await.is_ok()
    }

    async fn pool(&self, name: &str) -> Result<VipPool, Denial> {
        if let Some(pool) = self.pools.get(&ObjectRef::new(name)) {
            return Ok((*pool).clone());
        }
        // Just created, perhaps: ask the API server before refusing.
        match Api::<VipPool>::all(self.client.clone()).get_opt(name).await {
            Ok(Some(pool)) => Ok(pool),
            Ok(None) => Err(format!(
                "the Service asks for a VIP from VipPool {name:?}, which does not exist: create it, or fix the \
                 label {}",
                multicluster_core::keys::VIP_POOL
            )),
            Err(e) => Err(format!("cannot read VipPool {name}: {e}; retry")),
        }
    }

    /// The annotations for `service` (namespace, name, its object and the stored one on update),
    /// claiming an address unless `dry_run`.
    pub async fn assign(
        &self,
        owner: &multicluster_core::vip::OwnerKind,
        pool_name: &str,
        namespace: &str,
        service: &DynamicObject,
        old: Option<&DynamicObject>,
        dry_run: bool,
    ) -> Result<BTreeMap<String, String>, Denial> {
        let pool = self.pool(pool_name).await?;
        let ranges = vip::parse_ranges(&pool.spec.ranges)
            .map_err(|e| format!("VipPool {pool_name} cannot be used: {e}"))?;
        let name = service.metadata.name.clone().ok_or_else(|| {
            format!(
                "a {} asking for a VIP needs a name (generateName is not supported)",
                owner.kind
            )
        })?;
        let claims = self.claims.state();
        let is_ours = |c: &VipClaim| {
            c.spec.owner.kind == owner.kind
                && c.spec.owner.namespace.as_deref() == Some(namespace)
                && c.spec.owner.name == name
                && c.spec.pool == pool_name
        };
        // An address this Service already holds: its claim (a retried create), or its annotation.
        let held: Option<Ipv4Addr> = claims
            .iter()
            .find(|c| is_ours(c))
            .and_then(|c| c.spec.address.parse().ok())
            .or_else(|| {
                old.and_then(|o| o.annotations().get(VIP))
                    .and_then(|a| a.parse().ok())
            });
        let taken: HashSet<Ipv4Addr> = claims
            .iter()
            .filter_map(|c| c.spec.address.parse().ok())
            .collect();
        let hostname = vip::hostname(&name, namespace, &pool.spec.domain_suffix);
        if let Some(why) = vip::hostname_refusal(
            claims.iter().map(|c| &c.spec),
            pool_name,
            &hostname,
            owner,
            namespace,
            &name,
        ) {
            return Err(why);
        }
        let seed = vip::seed_for(namespace, &name);
        let claim_for = |addr: Ipv4Addr| {
            VipClaim::new(
                &addr.to_string(),
                VipClaimSpec {
                    pool: pool_name.to_owned(),
                    address: addr.to_string(),
                    hostname: hostname.clone(),
                    owner: ClaimOwner {
                        api_version: owner.api_version.clone(),
                        kind: owner.kind.clone(),
                        namespace: Some(namespace.to_owned()),
                        name: name.clone(),
                        uid: service.metadata.uid.clone(),
                    },
                },
            )
        };
        let api: Api<VipClaim> = Api::all(self.client.clone());
        let chosen = match vip::decide(held, &ranges, &taken, seed) {
            VipDecision::Keep(addr) => {
                let claimed_by_us = claims
                    .iter()
                    .any(|c| is_ours(c) && c.spec.address == addr.to_string());
                if !claimed_by_us && !dry_run {
                    api.create(&PostParams::default(), &claim_for(addr))
                        .await
                        .map_err(|e| format!("cannot re-claim {addr} for this Service: {e}"))?;
                }
                addr
            }
            VipDecision::PoolFull { size } => {
                return Err(format!(
                    "VipPool {pool_name} is full: all {size} addresses are claimed. Delete Services that hold one \
                     (their claims are released shortly after) or add a range to the pool"
                ));
            }
            VipDecision::TryInOrder(candidates) if dry_run => candidates[0],
            VipDecision::TryInOrder(candidates) => {
                let mut won = None;
                for addr in candidates {
                    match api.create(&PostParams::default(), &claim_for(addr)).await {
                        Ok(_) => {
                            won = Some(addr);
                            break;
                        }
                        // Another replica or Service took it since our cache last heard: next one.
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => {
                            return Err(format!(
                                "cannot claim {addr} from VipPool {pool_name}: {e}"
                            ));
                        }
                    }
                }
                won.ok_or_else(|| {
                    format!("VipPool {pool_name} is busy: every address tried was claimed concurrently; retry")
                })?
            }
        };
        Ok(vip::annotations_for(chosen, &hostname, &pool.spec))
    }
}
