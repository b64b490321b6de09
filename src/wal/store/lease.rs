//! The leader's lease and the roll call of the proxies sharing the log (DESIGN 12): one lease
//! row, taken by compare-and-set on its epoch and renewal count, and one row per proxy saying
//! when it was last heard from.
//!
//! Queries only: when to take, renew or give up the lease is the lease actor's decision, and
//! nothing here changes the log itself.

use std::time::Duration;

use diesel::prelude::*;
use serde::Serialize;

use super::{AnyPool, Fencing, LEASE_ROW, WalError, WalStore};
use crate::wal::models::now_ms;
use crate::wal::schema::{proxy_lease, proxy_members};

/// The lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = proxy_lease)]
pub struct Lease {
    /// PROXY_ID of the holder; none when free or released.
    pub holder: Option<String>,
    /// Goes up by one with every new holder; 0 before the first.
    pub epoch: i64,
    /// How the other proxies reach the holder (its ADVERTISE_URL).
    pub url: Option<String>,
    /// The holder's LEASE_TTL, in milliseconds: how long the others wait on a silent holder.
    pub ttl_ms: i64,
    /// Renewals under this epoch: a live holder changes it every LEASE_TTL / 3.
    pub renewals: i64,
    /// When the lease lapses unless renewed, by the holder's clock (for people: the proxies
    /// never compare each other's clocks).
    pub expires_ms: i64,
}

/// One proxy as last heard from.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = proxy_members)]
pub struct Member {
    /// Its PROXY_ID.
    #[serde(rename = "id")]
    pub proxy_id: String,
    /// Its ADVERTISE_URL.
    pub url: String,
    /// `leader` or `follower`, as it said.
    pub role: String,
    /// The epoch it knew.
    pub epoch: i64,
    /// When it was heard from, in milliseconds since the epoch.
    pub seen_ms: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WalStore {
    /// The lease as it is now.
    pub fn lease(&self) -> Result<Lease, WalError> {
        with_conn!(self.pool, |conn| Ok(proxy_lease::table
            .find(LEASE_ROW)
            .select(Lease::as_select())
            .first(conn)?))
    }

    /// Takes the lease for `holder` at `url` if it is still exactly as `seen`: the epoch goes up
    /// by one, once the fenced transactions in flight are over. Answers the new epoch, or `None`
    /// when someone changed the lease meanwhile.
    pub fn take_lease(
        &self,
        holder: &str,
        url: &str,
        seen: &Lease,
        ttl: Duration,
    ) -> Result<Option<i64>, WalError> {
        let epoch = seen.epoch + 1;
        with_conn!(self.pool, |conn| {
            conn.taking_over(|c| {
                let taken = diesel::update(
                    proxy_lease::table
                        .find(LEASE_ROW)
                        .filter(proxy_lease::epoch.eq(seen.epoch))
                        .filter(proxy_lease::renewals.eq(seen.renewals)),
                )
                .set((
                    proxy_lease::holder.eq(holder),
                    proxy_lease::epoch.eq(epoch),
                    proxy_lease::url.eq(url),
                    proxy_lease::ttl_ms.eq(millis(ttl)),
                    proxy_lease::renewals.eq(0),
                    proxy_lease::expires_ms.eq(now_ms() + millis(ttl)),
                ))
                .execute(c)?;
                Ok((taken == 1).then_some(epoch))
            })
        })
    }

    /// Renews the lease `holder` holds at `epoch`; answers false when it no longer does.
    pub fn renew_lease(&self, holder: &str, epoch: i64, ttl: Duration) -> Result<bool, WalError> {
        with_conn!(self.pool, |conn| {
            let renewed = diesel::update(
                proxy_lease::table
                    .find(LEASE_ROW)
                    .filter(proxy_lease::epoch.eq(epoch))
                    .filter(proxy_lease::holder.eq(holder)),
            )
            .set((
                proxy_lease::renewals.eq(proxy_lease::renewals + 1),
                proxy_lease::ttl_ms.eq(millis(ttl)),
                proxy_lease::expires_ms.eq(now_ms() + millis(ttl)),
            ))
            .execute(conn)?;
            Ok(renewed == 1)
        })
    }

    /// Gives up the lease `holder` holds at `epoch`, so that another proxy takes it at once;
    /// answers false when it no longer held it.
    pub fn release_lease(&self, holder: &str, epoch: i64) -> Result<bool, WalError> {
        with_conn!(self.pool, |conn| {
            let released = diesel::update(
                proxy_lease::table
                    .find(LEASE_ROW)
                    .filter(proxy_lease::epoch.eq(epoch))
                    .filter(proxy_lease::holder.eq(holder)),
            )
            .set((
                proxy_lease::holder.eq(None::<String>),
                proxy_lease::url.eq(None::<String>),
                proxy_lease::expires_ms.eq(0),
            ))
            .execute(conn)?;
            Ok(released == 1)
        })
    }

    /// Records that `member` was heard from now.
    pub fn report_member(&self, member: &Member) -> Result<(), WalError> {
        with_conn!(self.pool, |conn| {
            diesel::insert_into(proxy_members::table)
                .values(member)
                .on_conflict(proxy_members::proxy_id)
                .do_update()
                .set(member)
                .execute(conn)?;
            Ok(())
        })
    }

    /// The proxies heard from since `since_ms`, by id.
    pub fn members(&self, since_ms: i64) -> Result<Vec<Member>, WalError> {
        with_conn!(self.pool, |conn| Ok(proxy_members::table
            .filter(proxy_members::seen_ms.ge(since_ms))
            .order(proxy_members::proxy_id)
            .select(Member::as_select())
            .load(conn)?))
    }
}
