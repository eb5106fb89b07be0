//! smsotp-radiusd: the RADIUS front end of smsotp.
//!
//! Three layers, kept apart: [`server`] owns sockets, secrets, the
//! duplicate cache ([`dedup`]), the readers that sort what arrives so
//! answers with a State go first under overload ([`triage`]), workers and
//! the send lane ([`lane`]: what may wait for an SMS gateway), reload and
//! shutdown, with what a
//! reload replaces (config, clients, the shared store) in [`runtime`]; [`wire`]
//! decodes and checks packets (bounds, Message-Authenticator) and encodes
//! replies; [`handler`] turns one decoded request into a decision by
//! calling the core's login flow, with the first factor from [`primary`].
//! The RADIUS code and attribute numbers are in [`dictionary`].
//! [`receipts`] holds sent codes until their SMPP delivery receipt and
//! sends a failed one once more through the next provider; [`callback`]
//! serves the HTTP providers' status callbacks into the same registry.
//! [`metrics`] serves `GET /metrics` (`radius.metrics`): the store's SMS
//! counters, requests by outcome and send times.

pub mod callback;
pub mod dedup;
pub mod dictionary;
pub mod fibers;
pub mod handler;
pub mod http;
pub mod lane;
pub mod metrics;
pub mod outgoing;
pub mod primary;
pub mod receipts;
pub mod runtime;
pub mod server;
pub mod triage;
pub mod wire;
