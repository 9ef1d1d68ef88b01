//! Integration tests of the HTTP surface: real listeners for the conformance vectors and
//! reload, `oneshot` for the request-level behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_log;
mod attributes;
mod bad_input;
mod batch;
mod conformance;
mod console;
mod decision_log;
mod forward_auth;
mod governance;
mod identity;
mod nonblocking;
mod ops;
mod parser_property;
mod search;
mod support;
mod witness;
