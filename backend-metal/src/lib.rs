//! capms-backend-metal: the metal-api v1 client (reqwest + rustls, HMAC and bearer auth) that
//! implements `capms_core::MetalBackend` against a real metal-stack.
//!
//! Not built yet: this crate is a skeleton that the metal-api wire issue fills. See
//! ARCHITECTURE.md for the boundary it will keep.
