//! admin-web against the real server on a loopback port: HTTPS, sessions, CSRF, roles,
//! escaping, throttling and the API; `browser` drives real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (workspace rule)

mod acme;
mod api;
mod browser;
mod dashboard;
mod deliverability;
mod harness;
mod queue;
mod security;
mod sessions;
mod users;
