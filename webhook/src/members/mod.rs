//! Members in the hub server: one shared connection per member from the credentials the hub keeps
//! ([`connections`]), the health loop that probes them ([`health`]), and the proxy API through
//! which a hub user reaches a member as themselves ([`proxy`]).

pub mod connections;
pub mod health;
pub mod proxy;

pub use connections::MemberClients;
