//! Members: what joining a cluster creates on it and on the hub ([`join`]), how the hub judges a
//! member's health from its probes ([`health`]), and how a hub user reaches a member through the
//! hub's proxy API ([`proxy`]).

pub mod about;
pub mod health;
pub mod join;
pub mod proxy;
