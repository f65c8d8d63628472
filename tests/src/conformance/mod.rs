//! One conformance suite per port, run against every backend (the embedded one and AWS's
//! through moto's server) by `tests/e2e/conformance.rs`: what the worker relies on is
//! asserted once, and every adapter must pass the same assertions.

pub mod metadata;
pub mod objects;
pub mod queue;
